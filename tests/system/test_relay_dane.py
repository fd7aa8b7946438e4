"""DANE for SMTP (RFC 7672) in mailrep relay's delivery, end to end on loopback.

knotd serves dane.example, signed by knot itself (automatic DNSSEC signing,
its keys in the test's directory), plain.example unsigned, and the child
zone _tcp.mx-bogus.dane.example, unsigned although its parent publishes a
DS for it (so that its records are bogus). unbound is the validating
resolver the sending relay (A) asks: a static trust anchor for dane.example
(knot's DNSKEY), stub zones for everything pointing at that knotd only, no
root hints it could use and no other address than loopback. The MX hosts
are a second mailrep relay (B) with a certificate from a private CA for
some of their names (its chain file carries the CA), at 127.0.0.1, and
smtp-sink (no STARTTLS) at 127.0.0.2, on the same port (--smtp-port); the
TLSA records are at _PORT._tcp.HOST accordingly.

Cases (A with --dane on): DANE-EE (3 1 1 of B's key) delivered over TLS with
"dane":"verified"; DANE-TA (2 0 1 of the CA) with the right name delivered,
with a name the certificate lacks deferred; a TLSA record that matches
nothing deferred and nothing sent; TLSA records towards a server without
STARTTLS deferred, never sent in plain text; a signed domain without TLSA
records and an unsigned zone whose TLSA records would not match delivered
as before, without DANE; bogus TLSA records deferred with the lookup's
failure named; an explicit tls-policy off delivers in plain text whatever
the TLSA records say; dane-only defers mail to a domain without DANE. A
second sender with --dane off ignores the TLSA records altogether."""
import os
import shutil
import subprocess

import dns.message
import dns.query
import dns.rdatatype

from conftest import MAILREP, Server, datadir, free_port, servers, wait_dns  # noqa: F401
from knot import soa, start_knot
from relay_peers import start_sink_at
from relay_util import events, message, sink_files, start_relay, stop_clean, submit, wait_for
from test_relay_mta_sts import PolicyServer, make_ca, policy

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
CHILD = "_tcp.mx-bogus.dane.example"
INSECURE = "_tcp.mx-insec.dane.example"


def sha256_hex(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def der(args, inp):
    return subprocess.run(["openssl"] + args, input=inp, check=True,
                          capture_output=True).stdout


def spki_sha256(cert):
    with open(cert, "rb") as f:
        pem = f.read()
    pub = der(["x509", "-noout", "-pubkey"], pem)
    return sha256_hex(der(["pkey", "-pubin", "-outform", "DER"], pub))


def cert_sha256(cert):
    with open(cert, "rb") as f:
        return sha256_hex(der(["x509", "-outform", "DER"], f.read()))


def start_signing_knot(d, zones, signed):
    """knotd with zones ({origin: text}); those in `signed` signed by knot."""
    return start_knot(d, zones, signed)


def dnskeys(port, zone):
    """The zone's DNSKEY RRset as trust-anchor lines, once knot has signed it."""
    def get():
        q = dns.message.make_query(zone + ".", "DNSKEY", want_dnssec=True)
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1.0)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.DNSKEY:
                return ["%s. DNSKEY %s" % (zone, rd.to_text()) for rd in rrset]
        return None
    keys = wait_for(get, timeout=20)
    assert keys, "knot did not sign %s" % zone
    return keys


def start_unbound(d, knot_port, anchors):
    """unbound on loopback: validates with the given static trust anchors,
    asks only the local knotd (stub zones, the root included), nothing else."""
    port = free_port()
    ud = os.path.join(d, "unbound-%d" % port)
    os.makedirs(ud)
    stub = "127.0.0.1@%d" % knot_port
    conf = ["server:", "  interface: 127.0.0.1", "  port: %d" % port,
            "  outgoing-interface: 127.0.0.1", "  do-ip6: no",
            "  do-not-query-localhost: no", "  username: \"\"", "  chroot: \"\"",
            '  directory: "%s"' % ud, '  pidfile: "%s/unbound.pid"' % ud,
            "  use-syslog: no", '  logfile: ""', "  verbosity: 1", "  val-log-level: 2",
            "  num-threads: 1", "  qname-minimisation: no", "  prefetch: no",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "validator iterator"',
            "  trust-anchor-signaling: no", "  root-key-sentinel: no"]
    conf += ['  trust-anchor: "%s"' % a for a in anchors]
    for name in (".", "dane.example", "plain.example", CHILD, INSECURE):
        conf += ["stub-zone:", '  name: "%s"' % name, "  stub-addr: %s" % stub]
    conf += ["remote-control:", "  control-enable: no"]
    cpath = os.path.join(ud, "unbound.conf")
    with open(cpath, "w") as f:
        f.write("\n".join(conf) + "\n")
    srv = Server([UNBOUND, "-d", "-c", cpath], port, os.path.join(ud, "unbound.log"))
    try:
        wait_dns(port, name="dane.example.", rdtype="SOA", rdclass="IN", proc=srv.proc)
    except Exception:
        srv.stop()
        raise RuntimeError("unbound failed to start:\n" + srv.output())
    srv.resolver = "127.0.0.1:%d" % port
    return srv


def world(d, servers):
    """The receivers, the zones, knotd and unbound. Returns (B, B's sink,
    the plain sink, unbound, the CA file, its signing function)."""
    ca, sign = make_ca(d)
    # B's certificate names mx-ee and mx-ta, not mx-tawrong; its chain
    # file carries the CA, as DANE-TA needs the anchor in the chain
    cert, key = sign("mx", ["mx-ee.dane.example", "mx-ta.dane.example",
                            "mx-tacn.dane.example"])
    chain = os.path.join(d, "mx-chain.pem")
    with open(chain, "w") as out, open(cert) as c, open(ca) as a:
        out.write(c.read() + a.read())
    port = free_port()
    bd = os.path.join(d, "b")
    os.makedirs(bd)
    bsink = start_sink_at(bd, "127.0.0.1", free_port())
    servers.append(bsink)
    b = start_relay(bd, ["--trusted", "127.0.0.1/32", "--route", "*=127.0.0.1:%d" % bsink.port,
                         "--tls-cert", chain, "--tls-key", key], port=port)
    servers.append(b)
    plain = start_sink_at(d, "127.0.0.2", port)
    servers.append(plain)

    ee, ta = spki_sha256(cert), cert_sha256(ca)
    wrong = "00" * 32
    t = "_%d._tcp." % port
    z = soa("dane.example")
    # one domain per case, each with its own MX host
    hosts = {"ee": ("127.0.0.1", "3 1 1 " + ee), "ta": ("127.0.0.1", "2 0 1 " + ta),
             "tawrong": ("127.0.0.1", "2 0 1 " + ta), "bad": ("127.0.0.1", "3 1 1 " + wrong),
             "notls": ("127.0.0.2", "3 1 1 " + ee), "none": ("127.0.0.2", None),
             "off": ("127.0.0.1", "3 1 1 " + wrong), "bogus": ("127.0.0.1", None),
             "pkix": ("127.0.0.1", "1 1 1 " + ee), "insec": ("127.0.0.1", None),
             "eename": ("127.0.0.1", "3 1 1 " + ee), "sts": ("127.0.0.1", "3 1 1 " + ee),
             "stsonly": ("127.0.0.1", None)}
    for n, (addr, tlsa) in hosts.items():
        z += "%s MX 10 mx-%s\nmx-%s A %s\n" % (n, n, n, addr)
        if tlsa:
            z += "%smx-%s TLSA %s\n" % (t, n, tlsa)
    # MX hosts that are aliases (test_dane_cname): the TLSA records at the
    # expanded name; at the expanded name of an alias of mx-ta (DANE-TA,
    # whose name check must accept it); DANE-TA at the expanded name of
    # mx-tacn, whose certificate names the MX host only (accepted too);
    # none at the expanded name, so those
    # of the MX host name itself, which match nothing
    z += "alias MX 10 mx-alias\nmx-alias CNAME real-alias\nreal-alias A 127.0.0.1\n"
    z += "%sreal-alias TLSA 3 1 1 %s\n" % (t, ee)
    z += "aliasta MX 10 mx-aliasta\nmx-aliasta CNAME mx-ta\n"
    z += "tacn MX 10 mx-tacn\nmx-tacn CNAME real-tacn\nreal-tacn A 127.0.0.1\n"
    z += "%sreal-tacn TLSA 2 0 1 %s\n" % (t, ta)
    z += "aliasinit MX 10 mx-aliasinit\nmx-aliasinit CNAME real-aliasinit\n"
    z += "real-aliasinit A 127.0.0.1\n%smx-aliasinit TLSA 3 1 1 %s\n" % (t, wrong)
    # MTA-STS records (test_dane_before_mta_sts)
    for n in ("sts", "stsonly"):
        z += 'mta-sts.%s A 127.0.0.1\n_mta-sts.%s TXT "v=STSv1; id=1;"\n' % (n, n)
    # the TLSA name of mx-bogus lies in a child zone whose DS matches no key
    z += "_tcp.mx-bogus NS ns\n_tcp.mx-bogus DS 4711 13 2 %s\n" % ("ab" * 32)
    child = soa(CHILD) + "_%d TLSA 3 1 1 %s\n" % (port, ee)
    # mx-insec's lies in a child zone delegated without a DS: insecure
    z += "_tcp.mx-insec NS ns\n"
    insecure = soa(INSECURE) + "_%d TLSA 3 1 1 %s\n" % (port, wrong)
    p = soa("plain.example")
    for n in ("plain", "only"):
        p += "%s MX 10 mx-%s\nmx-%s A 127.0.0.2\n%smx-%s TLSA 3 1 1 %s\n" % (
            n, n, n, t, n, wrong)
    # an unsigned MX record naming a signed host with TLSA records that match
    # nothing: the MX RRset is insecure, so DANE does not apply
    p += "tobad MX 10 mx-bad.dane.example.\n"
    knot = start_signing_knot(d, {"dane.example": z, "plain.example": p, CHILD: child,
                                  INSECURE: insecure}, signed={"dane.example"})
    servers.append(knot)
    unbound = start_unbound(d, knot.port, dnskeys(knot.port, "dane.example"))
    servers.append(unbound)
    return b, bsink, plain, unbound, ca, sign


def by_rcpt(relay, kind):
    return {e["rcpt"]: e for e in events(relay) if e["event"] == kind}


def sender(d, unbound, port, name, extra=()):
    return start_relay(os.path.join(d, name), ["--trusted", "127.0.0.1/32",
                                               "--resolver", unbound.resolver,
                                               "--smtp-port", str(port),
                                               "--retry-schedule", "1h"] + list(extra),
                       name=name)


def test_dane(datadir, servers):
    b, bsink, plain, unbound, _, _ = world(datadir, servers)
    os.makedirs(os.path.join(datadir, "a"))
    a = sender(datadir, unbound, b.port, "a",
               ["--dane", "on", "--tls-policy", "off.dane.example=off",
                "--tls-policy", "only.plain.example=dane-only"])
    servers.append(a)
    names = ["ee", "ta", "tawrong", "bad", "notls", "none", "off", "bogus", "pkix", "insec",
             "eename"]
    rcpts = ["u@%s.dane.example" % n for n in names] + ["u@plain.plain.example",
                                                          "u@only.plain.example",
                                                          "u@tobad.plain.example"]
    for r in rcpts:
        submit(a.port, "alice@example.com", [r], data=message(r))
    done = wait_for(lambda: len(by_rcpt(a, "delivery")) + len(by_rcpt(a, "transient")) ==
                    len(rcpts), timeout=30)
    assert done, a.output() + "\n" + str(events(a)) + "\n" + unbound.output()
    ok, tr = by_rcpt(a, "delivery"), by_rcpt(a, "transient")
    assert sorted(ok) == ["u@ee.dane.example", "u@eename.dane.example",
                          "u@insec.dane.example", "u@none.dane.example",
                          "u@off.dane.example", "u@pkix.dane.example", "u@plain.plain.example",
                          "u@ta.dane.example", "u@tobad.plain.example"], (ok, tr, a.output())

    # DANE-EE and DANE-TA: over TLS, authenticated, the usage said
    e = ok["u@ee.dane.example"]
    assert e["tls"] is True and e["dane"] == "verified" and e["dane_usage"] == "dane-ee", e
    # DANE-EE checks no name: B's certificate is not for mx-eename
    e = ok["u@eename.dane.example"]
    assert e["tls"] is True and e["dane"] == "verified" and e["dane_usage"] == "dane-ee", e
    e = ok["u@ta.dane.example"]
    assert e["tls"] is True and e["dane"] == "verified" and e["dane_usage"] == "dane-ta", e
    # a secure domain without TLSA records, an unsigned zone with TLSA
    # records that would not match, insecure TLSA records under a secure
    # MX host, a secure MX host under an insecure MX record, and an
    # explicit policy off: no DANE
    for r in ("u@none.dane.example", "u@plain.plain.example", "u@off.dane.example",
              "u@insec.dane.example", "u@tobad.plain.example"):
        assert "dane" not in ok[r], ok[r]
    # (B offers STARTTLS: opportunistic TLS, unauthenticated)
    assert ok["u@insec.dane.example"]["tls"] is True
    assert ok["u@tobad.plain.example"]["tls"] is True
    # usage 1 (PKIX-EE) only: unusable for SMTP, TLS still required but
    # not authenticated (B's certificate is not for mx-pkix)
    assert ok["u@pkix.dane.example"]["tls"] is True and "dane" not in ok["u@pkix.dane.example"]
    assert ok["u@off.dane.example"]["tls"] is False
    assert ok["u@none.dane.example"]["tls"] is False  # smtp-sink, opportunistic
    assert ok["u@plain.plain.example"]["tls"] is False

    # DANE-TA for a name the certificate lacks: deferred, the name given
    e = tr["u@tawrong.dane.example"]
    assert e["code"] == 451 and "4.7.5" in e["reply"], e
    assert "DANE: the certificate of mx-tawrong.dane.example not accepted" in e["reply"], e
    # no record matches: deferred with the RFC's reason
    e = tr["u@bad.dane.example"]
    assert e["reply"] == ("451 4.7.5 DANE: no TLSA record matched the certificate of "
                          "mx-bad.dane.example"), e
    # TLSA records and no STARTTLS: deferred, never plain text
    e = tr["u@notls.dane.example"]
    assert e["code"] == 451 and e["tls"] is False, e
    assert "DANE: mx-notls.dane.example offers no STARTTLS" in e["reply"], e
    # bogus TLSA records: the host is not used, the failure named
    e = tr["u@bogus.dane.example"]
    assert "451 4.7.5 DANE: TLSA lookup for mx-bogus.dane.example failed (servfail" in \
        e["reply"], e
    assert "TLSA lookup for mx-bogus.dane.example failed" in a.output()
    # dane-only to an unsigned domain: deferred
    e = tr["u@only.plain.example"]
    assert "DANE: no usable TLSA records for mx-only.plain.example, and the policy is " \
           "dane-only" in e["reply"], e

    # what reached the receivers: B has ee, eename, ta, off, pkix, insec and
    # tobad; the plain sink none and plain; nothing of the deferred anywhere
    assert wait_for(lambda: len(by_rcpt(b, "delivery")) == 7), b.output()
    files = sink_files(bsink) + sink_files(plain)
    assert len(sink_files(bsink)) == 7 and len(sink_files(plain)) == 2, files
    for f in files:
        for n in ("tawrong", "bad", "notls", "bogus", "only"):
            assert b"u@%s." % n.encode() not in f, (n, f)
    print("\n".join(str((e.get("rcpt"), e["event"], e.get("tls"), e.get("dane"), e.get("dane_usage"), e.get("reply"))) for e in events(a)))
    stop_clean(a)


def test_dane_off_ignores_tlsa(datadir, servers):
    """The config file says dane = on, the flag --dane off overrides it."""
    b, bsink, plain, unbound, _, _ = world(datadir, servers)
    os.makedirs(os.path.join(datadir, "c"))
    ini = os.path.join(datadir, "c", "relay.ini")
    with open(ini, "w") as f:
        f.write("[relay]\ndane = on\n")
    c = sender(datadir, unbound, b.port, "c", ["-c", ini, "--dane", "off"])
    servers.append(c)
    rcpts = ["u@bad.dane.example", "u@bogus.dane.example", "u@notls.dane.example"]
    for r in rcpts:
        submit(c.port, "alice@example.com", [r], data=message(r))
    assert wait_for(lambda: len(by_rcpt(c, "delivery")) == 3, timeout=30), \
        c.output() + str(events(c))
    ok = by_rcpt(c, "delivery")
    # opportunistic TLS with B, whatever the TLSA records say; plain text
    # to smtp-sink
    assert ok["u@bad.dane.example"]["tls"] is True and "dane" not in ok["u@bad.dane.example"]
    assert ok["u@bogus.dane.example"]["tls"] is True
    assert ok["u@notls.dane.example"]["tls"] is False
    assert "TLSA" not in c.output()
    stop_clean(c)


def test_dane_setting_errors(datadir):
    for argv, want in ((["--dane", "maybe"], "dane: expected on or off, not 'maybe'"),
                       (["--tls-policy", "x.example=dane"],
                        "tls-policy 'x.example=dane': mode must be opportunistic, required, "
                        "verify, dane-only or off")):
        p = subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:%d" % free_port(),
                            "--spool", os.path.join(datadir, "spool")] + argv,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and want in p.stderr, (p.returncode, p.stderr)


def test_dane_before_mta_sts(datadir, servers):
    """Both domains publish an MTA-STS policy in enforce mode that lists
    another MX host only: sts.dane.example's MX host has TLSA records, so
    DANE applies instead and the mail goes; stsonly.dane.example's has
    none, so the policy applies and defers it (the policy is in force)."""
    b, bsink, plain, unbound, ca, sign = world(datadir, servers)
    hcert, hkey = sign("https", ["mta-sts.sts.dane.example", "mta-sts.stsonly.dane.example"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    for n in ("sts", "stsonly"):
        web.policies["mta-sts.%s.dane.example" % n] = policy("enforce", "mx.elsewhere.example")
    os.makedirs(os.path.join(datadir, "s"))
    a = sender(datadir, unbound, b.port, "s", ["--dane", "on", "--tls-ca", ca,
                                                "--mta-sts-port", str(web.port),
                                                "--mta-sts-timeout", "10s"])
    servers.append(a)
    for r in ("u@sts.dane.example", "u@stsonly.dane.example"):
        submit(a.port, "alice@example.com", [r], data=message(r))
    assert wait_for(lambda: len(by_rcpt(a, "delivery")) + len(by_rcpt(a, "transient")) == 2,
                    timeout=30), a.output() + str(events(a))
    ok, tr = by_rcpt(a, "delivery"), by_rcpt(a, "transient")
    e = ok["u@sts.dane.example"]
    assert e["dane"] == "verified" and "mta_sts" not in e, e
    e = tr["u@stsonly.dane.example"]
    assert e["code"] == 451 and "no MX host matches" in e["reply"], e
    # DANE's domain was not even looked up for a policy
    assert "mta-sts.sts.dane.example" not in web.fetches, web.fetches
    assert web.fetches.get("mta-sts.stsonly.dane.example") == 1, web.fetches
    stop_clean(a)


def outcomes(relay, rcpts):
    """Submits one message to each recipient and waits until each has been
    delivered or deferred: (deliveries, deferrals) by recipient."""
    for r in rcpts:
        submit(relay.port, "alice@example.com", [r], data=message(r))
    assert wait_for(lambda: len(by_rcpt(relay, "delivery")) + len(by_rcpt(relay, "transient")) ==
                    len(rcpts), timeout=30), relay.output() + str(events(relay))
    return by_rcpt(relay, "delivery"), by_rcpt(relay, "transient")


def test_dane_cname(datadir, servers):
    """An MX host that is an alias: its TLSA records are asked for at the
    expanded name first (DANE-EE and DANE-TA verified there), and at the MX
    host name when the expanded name has none (RFC 7672 2.2.2)."""
    b, bsink, plain, unbound, _, _ = world(datadir, servers)
    os.makedirs(os.path.join(datadir, "n"))
    a = sender(datadir, unbound, b.port, "n", ["--dane", "on"])
    servers.append(a)
    ok, tr = outcomes(a, ["u@alias.dane.example", "u@aliasta.dane.example",
                          "u@tacn.dane.example", "u@aliasinit.dane.example"])
    e = ok.get("u@tacn.dane.example")
    assert e and e["dane"] == "verified" and e["dane_usage"] == "dane-ta", (ok, tr)
    e = ok.get("u@alias.dane.example")
    assert e and e["dane"] == "verified" and e["dane_usage"] == "dane-ee", (ok, tr)
    e = ok.get("u@aliasta.dane.example")
    assert e and e["dane"] == "verified" and e["dane_usage"] == "dane-ta", (ok, tr)
    e = tr.get("u@aliasinit.dane.example")
    assert e and e["reply"] == ("451 4.7.5 DANE: no TLSA record matched the certificate of "
                                "mx-aliasinit.dane.example"), (ok, tr)
    stop_clean(a)


def test_dane_static_route(datadir, servers):
    """A static route that names a host: with --dane, its TLSA records
    (at _PORT._tcp.HOST, PORT the route's) apply when its addresses are
    signed, as for an MX host (RFC 7672 2.2.3); an unsigned host is used
    as before."""
    b, bsink, plain, unbound, _, _ = world(datadir, servers)
    os.makedirs(os.path.join(datadir, "r"))
    hop = ":%d" % b.port
    csvpath = os.path.join(datadir, "r", "acct.csv")
    a = sender(datadir, unbound, b.port, "r",
               ["--dane", "on", "--csv", csvpath,
                "--route", "good.route.example=mx-ee.dane.example" + hop,
                "--route", "bad.route.example=mx-bad.dane.example" + hop,
                "--route", "plain.route.example=mx-plain.plain.example" + hop])
    servers.append(a)
    ok, tr = outcomes(a, ["u@good.route.example", "u@bad.route.example",
                          "u@plain.route.example"])
    e = ok.get("u@good.route.example")
    assert e and e["tls"] is True and e["dane"] == "verified", (ok, tr)
    e = tr.get("u@bad.route.example")
    assert e and e["reply"] == ("451 4.7.5 DANE: no TLSA record matched the certificate of "
                                "mx-bad.dane.example"), (ok, tr)
    e = ok.get("u@plain.route.example")
    assert e and "dane" not in e and e["tls"] is False, (ok, tr)
    stop_clean(a)
    # the CSV accounting says the same
    import csv
    with open(csvpath, newline="") as f:
        rows = {(r["type"], r["rcpt"]): r for r in csv.DictReader(f)}
    assert rows[("d", "u@good.route.example")]["dlvTls"] == "yes"
    assert rows[("d", "u@good.route.example")]["dlvDane"] == "dane-ee"
    assert rows[("t", "u@bad.route.example")]["dlvDane"] == ""
    assert rows[("d", "u@plain.route.example")]["dlvTls"] == "no"
    assert rows[("d", "u@plain.route.example")]["dlvDane"] == ""
