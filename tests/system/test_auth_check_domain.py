"""mailrep check domain against zones served by knotd on loopback: a clean
domain, SPF evaluation with --ip (the JSON spf.result is one of RFC 7208's
seven words), a domain with many problems, and DNS failures reported as
"could not check"."""
import json
import os
import subprocess

from conftest import MAILREP, datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot

SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


def zone(ed_record):
    return soa("example.com") + """
@ TXT "v=spf1 ip4:192.0.2.0/24 mx -all"
@ MX 10 mail
mail A 192.0.2.25
mail AAAA 2001:db8::25
s1._domainkey TXT "%s"
_dmarc TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
_mta-sts TXT "v=STSv1; id=20261123"
bad TXT "v=spf1 ptr +all"
bad MX 10 alias
bad MX 20 192.0.2.99.
alias CNAME mail
broken TXT "v=spf1 frob -all"
broken MX 0 .
voids TXT "v=spf1 a:gone1.example.com a:gone2.example.com a:gone3.example.com -all"
voids MX 10 mail
weak._domainkey.bad TXT "v=DKIM1; k=rsa; t=y; p="
""" % ed_record


def check(resolver, *args):
    p = subprocess.run([MAILREP, "check", "domain", "--resolver", resolver] + list(args),
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_check_domain(datadir, servers):
    key = os.path.join(datadir, "k.pem")
    p = subprocess.run([MAILREP, "dkim", "keygen", "--type", "ed25519", "--selector", "s1",
                        "--domain", "example.com", "--out", key], capture_output=True, check=True)
    ed_record = p.stdout.decode().split('"')[1]
    srv = start_knot(datadir, {"example.com": zone(ed_record)})
    servers.append(srv)
    res = srv.resolver

    rc, out, err = check(res, "example.com", "--selector", "s1", "--ip", "192.0.2.10", "--json")
    doc = json.loads(out)
    assert rc == 0, out
    assert doc["status"] == "clean"
    assert doc["spf"]["result"] == "pass"
    assert doc["spf"]["records"] == 1 and doc["spf"]["valid"] is True
    assert doc["spf"]["dns_terms"] == 1 and doc["spf"]["all"] == "-all"
    assert doc["spf"]["void_lookups"] == 0
    assert doc["dkim"][0]["status"] == "ok" and doc["dkim"][0]["type"] == "ed25519"
    assert doc["dmarc"]["p"] == "reject"
    assert doc["mx"]["hosts"][0]["host"] == "mail.example.com"
    assert doc["mx"]["hosts"][0]["resolves"] is True
    assert doc["mta_sts"]["present"] is True

    rc, out, _ = check(res, "example.com", "--ip", "198.51.100.7", "--mail-from",
                       "someone@example.com", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["spf"]["result"] == "fail"
    assert doc["spf"]["result"] in SPF_RESULTS

    rc, out, _ = check(res, "example.com", "--ip", "2001:db8::25", "--json")
    assert json.loads(out)["spf"]["result"] == "pass"  # via mx

    rc, out, _ = check(res, "bad.example.com", "--selector", "nokey", "--selector", "weak",
                       "--ip", "203.0.113.5", "--json")
    doc = json.loads(out)
    assert rc == 1
    assert doc["spf"]["result"] == "pass"  # +all lets anybody pass: exactly the problem
    msgs = " ".join(p["message"] for p in doc["problems"])
    assert "+all" in msgs and "ptr" in msgs
    assert "CNAME" in msgs and "IP address" in msgs
    assert doc["dkim"][0]["status"] == "missing" and doc["dkim"][1]["status"] == "revoked"
    assert doc["dmarc"]["found_at"] == "example.com"

    rc, out, _ = check(res, "broken.example.com", "--ip", "192.0.2.1", "--json")
    doc = json.loads(out)
    assert doc["spf"]["result"] == "permerror" and doc["spf"]["valid"] is False
    assert doc["mx"]["null_mx"] is True

    rc, out, _ = check(res, "voids.example.com", "--json")
    doc = json.loads(out)
    assert doc["spf"]["void_lookups"] == 3
    assert any("void" in p["message"] for p in doc["problems"])
    assert rc == 1

    rc, out, _ = check(res, "example.com", "--selector", "s1")
    assert rc == 0 and "ok: one SPF record" in out and "0 problem(s)" in out

    # a zone the server refuses: nothing can be checked, and it says so
    rc, out, _ = check(res, "example.org", "--ip", "192.0.2.1", "--json")
    doc = json.loads(out)
    assert rc == 3 and doc["status"] == "could-not-check"
    assert doc["spf"]["result"] == "temperror"


def test_check_domain_usage():
    p = subprocess.run([MAILREP, "check", "domain", "--resolver", "127.0.0.1:9", "--ip", "x",
                        "example.com"], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"not an IP" in p.stderr
    p = subprocess.run([MAILREP, "check", "domain"], capture_output=True, timeout=30)
    assert p.returncode == 2
