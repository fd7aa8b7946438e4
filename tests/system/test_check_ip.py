"""mailrep check ip against DNSBL and reverse zones served by knotd on
loopback: a list that lists the address (with a TXT reason), a clean list,
a broken list that fails the RFC 5782 test entry, a list answering
127.255.255.254 (an error, not a listing), an IPv6 list, and PTR records
that are forward-confirmed, generic-looking, or missing."""
import json
import os
import subprocess

from conftest import MAILREP, datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot

TEST_ENTRIES = "2.0.0.127 A 127.0.0.2\n2.0.0.127 TXT \"test entry\"\n"
V6_TEST = ("2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 A 127.0.0.2\n")

ZONES = {
    "listed.test": soa("listed.test") + TEST_ENTRIES +
    "10.2.0.192 A 127.0.0.2\n10.2.0.192 A 127.0.0.4\n"
    "10.2.0.192 TXT \"listed for spamtrap hits, see https://listed.test/10\"\n",
    "clean.test": soa("clean.test") + TEST_ENTRIES,
    # fails the test entry: 127.0.0.2 is not listed, and lists everything else
    "broken.test": soa("broken.test") + "* A 127.0.0.2\n2.0.0.127 TXT \"no A here\"\n",
    "refusing.test": soa("refusing.test") + "* A 127.255.255.254\n",
    "six.test": soa("six.test") + TEST_ENTRIES + V6_TEST +
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 A 127.0.0.3\n",
    "2.0.192.in-addr.arpa": soa("2.0.192.in-addr.arpa") +
    "10 PTR mail.example.com.\n20 PTR 192-0-2-20.dynamic.isp.example.com.\n"
    "30 PTR mail.example.com.\n40 PTR dsl-pool.example.com.\n",
    "8.b.d.0.1.0.0.2.ip6.arpa": soa("8.b.d.0.1.0.0.2.ip6.arpa") +
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR mail6.example.com.\n",
    "example.com": soa("example.com") + "mail A 192.0.2.10\nmail A 192.0.2.30\n"
    "mail6 AAAA 2001:db8::1\n"
    "192-0-2-20.dynamic.isp A 192.0.2.20\ndsl-pool A 192.0.2.40\n",
}

LISTS = """# test lists
listed.test   | ip4  | Listed list  | 127.0.0.2=spamtrap hits,127.0.0.4=exploited | https://listed.test/lookup
clean.test    | ip4  | Clean list   | -  | https://clean.test/
broken.test   | ip4  | Broken list  | -  | https://broken.test/
refusing.test | ip4  | Refusing list| -  | https://refusing.test/
six.test      | both | Six list     | -  | https://six.test/
"""


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def check(resolver, *args):
    p = subprocess.run([MAILREP, "check", "ip", "--resolver", resolver] + list(args),
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def by_zone(doc):
    return {d["zone"]: d for d in doc["dnsbls"]}


def test_check_ip(datadir, servers):
    srv = start_knot(datadir, ZONES)
    servers.append(srv)
    res = srv.resolver
    lists = write(datadir, "lists.txt", LISTS)

    rc, out, err = check(res, "192.0.2.10", "--lists", lists, "--json")
    doc = json.loads(out)
    assert rc == 1, out + err
    z = by_zone(doc)
    assert z["listed.test"]["status"] == "listed"
    assert {c["code"] for c in z["listed.test"]["codes"]} == {"127.0.0.2", "127.0.0.4"}
    assert "spamtrap hits" in json.dumps(z["listed.test"]["codes"])
    assert z["listed.test"]["reason"].startswith("listed for spamtrap hits")
    assert z["clean.test"]["status"] == "not-listed"
    assert z["broken.test"]["status"] == "broken"
    assert z["refusing.test"]["status"] == "error"
    assert "127.255.255.254" in z["refusing.test"]["detail"]
    assert z["six.test"]["status"] == "not-listed"
    assert doc["listed_on"] == 1 and doc["lists_checked"] == 5
    assert doc["ptr"]["forward_confirmed"] is True and doc["ptr"]["generic"] is False
    msgs = " ".join(p["message"] for p in doc["problems"])
    assert "Listed list" in msgs and "delisting at https://listed.test/lookup" in msgs
    assert "Broken list" not in msgs and "Refusing list" not in msgs
    warns = " ".join(w["message"] for w in doc["warnings"])
    assert "RFC 5782" in warns and "127.255.255.254" in warns

    # generic PTR, forward-confirmed
    only_clean = write(datadir, "clean.txt", "clean.test | ip4 | Clean | - | https://c/\n")
    rc, out, _ = check(res, "192.0.2.20", "--lists", only_clean, "--json")
    doc = json.loads(out)
    assert rc == 1
    assert doc["ptr"]["generic"] is True and doc["ptr"]["forward_confirmed"] is True
    assert "embeds" in doc["ptr"]["names"][0]["generic_why"] or \
        "dynamic" in doc["ptr"]["names"][0]["generic_why"]
    rc, out, _ = check(res, "192.0.2.40", "--lists", only_clean, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ptr"]["generic"] is True

    # clean: not listed, PTR confirmed and specific
    rc, out, _ = check(res, "192.0.2.30", "--lists", only_clean, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["status"] == "clean", out
    rc, out, _ = check(res, "192.0.2.30", "--lists", only_clean)
    assert rc == 0 and "ok: not listed on Clean" in out and "0 problem(s)" in out

    # no PTR at all
    rc, out, _ = check(res, "192.0.2.99", "--lists", only_clean, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ptr"]["status"] == "missing"

    # IPv6: only lists that take IPv6 are asked
    rc, out, _ = check(res, "2001:db8::1", "--lists", lists, "--json")
    doc = json.loads(out)
    assert [d["zone"] for d in doc["dnsbls"]] == ["six.test"]
    assert doc["dnsbls"][0]["status"] == "listed"
    assert doc["dnsbls"][0]["codes"][0]["code"] == "127.0.0.3"
    assert doc["ptr"]["names"][0]["name"] == "mail6.example.com"
    assert doc["ptr"]["forward_confirmed"] is True and doc["ptr"]["generic"] is False

    # a list the server does not serve: could not check
    missing = write(datadir, "missing.txt", "nowhere.test | ip4 | Nowhere | - | https://n/\n")
    rc, out, _ = check(res, "192.0.2.30", "--lists", missing, "--json")
    doc = json.loads(out)
    assert rc == 3 and doc["status"] == "could-not-check"
    assert doc["dnsbls"][0]["status"] == "error"


def test_check_ip_usage(datadir):
    bad = write(datadir, "bad.txt", "ok.test | ip4 | OK | - | https://x/\nbad.test | ip5 | B | - | u\n")
    p = subprocess.run([MAILREP, "check", "ip", "--resolver", "127.0.0.1:9", "--lists", bad,
                        "192.0.2.1"], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"bad.txt:2:" in p.stderr
    p = subprocess.run([MAILREP, "check", "ip", "--resolver", "127.0.0.1:9", "not-an-ip"],
                       capture_output=True, timeout=30)
    assert p.returncode == 2 and b"not an IP" in p.stderr


def test_default_list_file():
    """The shipped list file parses and holds the lists the checker promises."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "data", "dnsbls.txt")).read()
    zones = [line.split("|")[0].strip() for line in text.splitlines()
             if line.strip() and not line.startswith("#")]
    for z in ("dnsbl-1.uceprotect.net", "dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net",
              "ubl.unsubscore.com"):
        assert z in zones
    assert not any("sorbs" in z for z in zones)
    # the binary finds it by default and accepts it (its only error can then be
    # the unreachable resolver)
    env = dict(os.environ)
    env.pop("MAILREP_DNSBLS", None)
    p = subprocess.run([MAILREP, "check", "ip", "--resolver", "127.0.0.1:9", "--json",
                        "192.0.2.1"], capture_output=True, timeout=60, env=env)
    assert p.returncode == 3, p.stderr
    assert len(json.loads(p.stdout)["dnsbls"]) == len(zones)
