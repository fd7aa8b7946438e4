#!/usr/bin/python3
"""Converts the openspf RFC 7208 suite (rfc7208-tests.yml) into the line
format the C driver (tests/unit/test_auth_spf_suite.c) reads, so that the C
side needs no YAML parser. Run: yaml2txt.py rfc7208-tests.yml > rfc7208-tests.txt

Zone data follows the suite's own conventions: type SPF records are served
as TXT unless the name has TXT records of its own ("TXT: NONE" means none),
and TIMEOUT makes every lookup of the name time out for the types it has no
records of. Strings are hex-encoded; one line per item:

  S <description>                           a scenario starts (zone cleared)
  Z <hex name> <TYPE> <pref> <hex data>       a record (pref for MX, else 0)
  T <hex name>                                  the name times out
  C <test> <ip> <hex mailfrom> <hex helo> <results,...> <hex explanation|->
"""
import sys

import yaml


def hx(s):
    return s.encode("utf-8").hex() if s else "-"


def main(path):
    out = []
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    for doc in docs:
        if not doc:
            continue
        out.append("S " + hx(doc.get("description", "")))
        for name, records in (doc.get("zonedata") or {}).items():
            has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
            for r in records:
                if r == "TIMEOUT":
                    out.append("T %s" % hx(name))
                    continue
                (typ, val), = r.items()
                if typ == "SPF":
                    if has_txt:
                        continue
                    typ = "TXT"
                if typ == "TXT" and val == "NONE":
                    continue
                pref = 0
                if typ == "MX":
                    pref, val = val
                if isinstance(val, list):
                    val = "".join(val)
                out.append("Z %s %s %d %s" % (hx(name), typ, pref, hx(str(val))))
        for tname, t in doc["tests"].items():
            res = t["result"]
            if not isinstance(res, list):
                res = [res]
            out.append("C %s %s %s %s %s %s" % (tname, t["host"], hx(t["mailfrom"]),
                                                hx(t["helo"]), ",".join(res),
                                                hx(t.get("explanation", ""))))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
