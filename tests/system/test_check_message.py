"""mailrep check message on messages signed by `mailrep dkim sign`, with the
key published in a knotd zone on loopback: a bulk message that follows the
rules (List-Unsubscribe with https, One-Click, both signed, From aligned),
the same headers left out of the signature, missing or mailto-only
unsubscribe fields, a broken signature, no signature, SPF with --ip, and a
key that cannot be fetched (could not check)."""
import json
import os
import subprocess

from conftest import MAILREP, datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot

BODY = "Hello,\r\n\r\nthis month's news.\r\n"


def message(unsub=True, lu="<https://example.com/u/1>, <mailto:u@example.com>",
            frm="News <news@example.com>"):
    h = ("From: %s\r\nTo: someone@example.net\r\nSubject: News\r\n"
         "Date: Mon, 23 Nov 2026 04:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n" % frm)
    if unsub:
        h += "List-Unsubscribe: %s\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" % lu
    return h + "\r\n" + BODY


def sign(key, domain, msg, *extra):
    p = subprocess.run([MAILREP, "dkim", "sign", "--key", key, "--selector", "s1", "--domain",
                        domain] + list(extra), input=msg.encode(), capture_output=True, check=True)
    return p.stdout


def check(d, resolver, raw, *args):
    path = os.path.join(d, "msg.eml")
    with open(path, "wb") as f:
        f.write(raw)
    p = subprocess.run([MAILREP, "check", "message", "--resolver", resolver, path] + list(args),
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_check_message(datadir, servers):
    key = os.path.join(datadir, "k.pem")
    p = subprocess.run([MAILREP, "dkim", "keygen", "--type", "ed25519", "--selector", "s1",
                        "--domain", "example.com", "--out", key], capture_output=True, check=True)
    record = p.stdout.decode().split('"')[1]
    zone = soa("example.com") + ('@ TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                                 's1._domainkey TXT "%s"\n'
                                 '_dmarc TXT "v=DMARC1; p=reject"\n' % record)
    srv = start_knot(datadir, {"example.com": zone})
    servers.append(srv)
    res = srv.resolver

    # follows every rule
    good = sign(key, "example.com", message())
    rc, out, err = check(datadir, res, good, "--json")
    doc = json.loads(out)
    assert rc == 0, out + err
    assert doc["from_domain"] == "example.com"
    assert doc["dkim"][0]["result"] == "pass" and doc["dkim"][0]["aligned"] is True
    assert doc["dmarc"]["result"] == "pass" and doc["dmarc"]["dkim_aligned"] is True
    assert doc["bulk"] == {"list_unsubscribe": True, "https_uri": True, "one_click": True,
                           "list_unsubscribe_signed": True,
                           "list_unsubscribe_post_signed": True}
    assert doc["spf"] is None

    rc, out, _ = check(datadir, res, good, "--json", "--ip", "192.0.2.7", "--mail-from",
                       "bounce@example.com")
    doc = json.loads(out)
    assert rc == 0 and doc["spf"]["result"] == "pass" and doc["dmarc"]["spf_aligned"] is True
    rc, out, _ = check(datadir, res, good, "--json", "--ip", "198.51.100.7", "--mail-from",
                       "bounce@example.com")
    doc = json.loads(out)
    assert rc == 1 and doc["spf"]["result"] == "fail"
    assert doc["dmarc"]["result"] == "pass"  # DKIM still aligns

    # the unsubscribe fields present but left out of the signature
    uncovered = sign(key, "example.com", message(), "--headers", "from:to:subject:date",
                     "--oversign", "from")
    rc, out, _ = check(datadir, res, uncovered, "--json")
    doc = json.loads(out)
    assert rc == 1
    assert doc["dkim"][0]["result"] == "pass"
    assert doc["bulk"]["list_unsubscribe_signed"] is False
    assert doc["bulk"]["list_unsubscribe_post_signed"] is False
    assert any("not covered" in p["message"] for p in doc["problems"])

    # no unsubscribe fields at all; a mailto-only one
    rc, out, _ = check(datadir, res, sign(key, "example.com", message(unsub=False)), "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["bulk"]["list_unsubscribe"] is False
    msgs = " ".join(p["message"] for p in doc["problems"])
    assert "no List-Unsubscribe field" in msgs and "no List-Unsubscribe-Post" in msgs
    rc, out, _ = check(datadir, res, sign(key, "example.com", message(lu="<mailto:u@example.com>")),
                       "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["bulk"]["https_uri"] is False

    # a body changed after signing
    rc, out, _ = check(datadir, res, good.replace(b"news.", b"NEWS!"), "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["dkim"][0]["result"] == "fail"
    assert doc["dmarc"]["result"] == "fail"

    # From a domain the signature does not align with
    rc, out, _ = check(datadir, res, sign(key, "example.com",
                                          message(frm="x@unrelated.example.org")), "--json")
    doc = json.loads(out)
    assert rc != 0 and doc["dkim"][0]["aligned"] is False

    # unsigned
    rc, out, _ = check(datadir, res, message().encode(), "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["dkim"] == []
    assert any("no DKIM signature" in p["message"] for p in doc["problems"])

    # human report
    rc, out, _ = check(datadir, res, good)
    assert rc == 0 and "ok: List-Unsubscribe-Post" in out and "0 problem(s)" in out


def test_check_message_unreachable_key(datadir, servers):
    key = os.path.join(datadir, "k.pem")
    subprocess.run([MAILREP, "dkim", "keygen", "--type", "ed25519", "--selector", "s1",
                    "--domain", "example.org", "--out", key], capture_output=True, check=True)
    srv = start_knot(datadir, {"example.com": soa("example.com")})
    servers.append(srv)
    signed = sign(key, "example.org", message(frm="news@example.org"))
    rc, out, _ = check(datadir, srv.resolver, signed, "--json")
    doc = json.loads(out)
    assert rc == 3 and doc["status"] == "could-not-check", out
    assert doc["dkim"][0]["result"] == "temperror"


def test_check_message_usage(datadir):
    rc, _, err = check(datadir, "127.0.0.1:9", b"From: a@b\r\n\r\n", "--ip", "192.0.2.1")
    assert rc == 2 and "--mail-from" in err
    p = subprocess.run([MAILREP, "check", "message", "--resolver", "127.0.0.1:9",
                        os.path.join(datadir, "nope.eml")], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"nope.eml" in p.stderr
