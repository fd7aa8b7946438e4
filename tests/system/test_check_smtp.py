"""mailrep check smtp against real SMTP peers on loopback: Postfix's
smtp-sink accepting everything (an open relay, as far as a probe can tell)
and rejecting RCPT (closed), and a STARTTLS-capable server.

smtp-sink cannot do TLS, so STARTTLS is tested against a private Postfix
instance (postfix_instance.py) whose smtpd offers it with certificates the
tests make with `openssl`. The PTR of 127.0.0.1 and the host name the tests
connect to are served by knotd."""
import json
import os
import socket
import subprocess
import time

from conftest import MAILREP, Server, datadir, free_port, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from postfix_instance import PostfixInstance

SINK = "/usr/sbin/smtp-sink"

ZONES = {
    "0.0.127.in-addr.arpa": soa("0.0.127.in-addr.arpa") + "1 PTR mx.example.com.\n",
    "example.com": soa("example.com") + "mx A 127.0.0.1\n",
}


def start_sink(tmpdir, banner, extra=(), host="127.0.0.1"):
    port = free_port()
    dump = os.path.join(tmpdir, "dump-%d" % port)
    os.makedirs(dump)
    os.chmod(dump, 0o777)
    argv = [SINK, "-v", "-h", banner, "-d", dump + "/%M."] + list(extra)
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "nobody"]
    listen = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    srv = Server(argv + [listen, "10"], port,
                 os.path.join(tmpdir, "sink-%d.log" % port))
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection((host, port), 0.2).close()
            break
        except OSError:
            if time.time() > deadline or srv.proc.poll() is not None:
                srv.stop()
                raise RuntimeError("smtp-sink did not start:\n" + srv.output())
            time.sleep(0.05)
    srv.dump = dump
    return srv


def check(resolver, *args):
    p = subprocess.run([MAILREP, "check", "smtp", "--resolver", resolver, "--timeout", "5000"]
                       + list(args), capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def commands_seen(sink):
    """The SMTP commands smtp-sink logged (-v), after its own start-up lines."""
    time.sleep(0.2)  # smtp-sink logs after replying
    words = []
    for line in sink.output().splitlines():
        part = line.split(": ", 1)[-1]
        verb = part.split(" ")[0].split(":")[0].upper()
        if verb in ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "QUIT", "BDAT", "STARTTLS"):
            words.append(verb)
    return words


def test_check_smtp_sink(datadir, servers):
    dns = start_knot(datadir, ZONES)
    servers.append(dns)
    open_sink = start_sink(datadir, "mx.example.com")
    servers.append(open_sink)

    rc, out, err = check(dns.resolver, "--open-relay-probe", "--json",
                         "127.0.0.1:%d" % open_sink.port)
    doc = json.loads(out)
    assert rc == 1, out + err
    assert doc["banner"]["code"] == 220 and doc["banner"]["name"] == "mx.example.com"
    assert "PIPELINING" in doc["ehlo"]["extensions"]
    assert doc["starttls"] is False
    assert doc["ptr"] == ["mx.example.com"] and doc["ptr_matches_banner"] is True
    assert doc["open_relay"]["result"] == "open" and doc["open_relay"]["rcpt_code"] == 250
    for step in ("connect", "banner", "ehlo", "mail", "rcpt", "quit"):
        assert doc["ms"][step] >= 0
    msgs = " ".join(p["message"] for p in doc["problems"])
    assert "OPEN RELAY" in msgs and "STARTTLS" in msgs
    seen = commands_seen(open_sink)
    assert seen == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"], seen
    assert os.listdir(open_sink.dump) == []  # no message was ever transferred

    # by host name, resolved through the resolver only; no probe asked, none made
    rc, out, _ = check(dns.resolver, "--json", "mx.example.com:%d" % open_sink.port)
    doc = json.loads(out)
    assert doc["address"] == "127.0.0.1" and "open_relay" not in doc
    assert commands_seen(open_sink).count("MAIL") == 1

    closed = start_sink(datadir, "other.example.net", ["-f", "rcpt"])
    servers.append(closed)
    rc, out, _ = check(dns.resolver, "--open-relay-probe", "--json", "127.0.0.1:%d" % closed.port)
    doc = json.loads(out)
    assert doc["open_relay"]["result"] == "closed" and doc["open_relay"]["rcpt_code"] // 100 == 5
    assert doc["ptr_matches_banner"] is False
    msgs = " ".join(p["message"] for p in doc["problems"])
    assert "OPEN RELAY" not in msgs and "banner says other.example.net" in msgs
    assert "DATA" not in commands_seen(closed)
    assert os.listdir(closed.dump) == []

    # human report
    rc, out, _ = check(dns.resolver, "127.0.0.1:%d" % open_sink.port)
    assert rc == 1 and "ok: banner after" in out and "PROBLEM: no STARTTLS" in out


def test_check_smtp_ipv6(datadir, servers):
    sink = start_sink(datadir, "mx6.example.com", host="::1")
    servers.append(sink)
    rc, out, _ = check("127.0.0.1:9", "--json", "[::1]:%d" % sink.port)
    doc = json.loads(out)
    assert doc["address"] == "::1" and doc["banner"]["name"] == "mx6.example.com"
    assert "PIPELINING" in doc["ehlo"]["extensions"]


def test_check_smtp_unreachable(datadir):
    port = free_port()  # nothing listens there
    rc, out, _ = check("127.0.0.1:9", "--json", "127.0.0.1:%d" % port)
    assert rc == 3 and json.loads(out)["status"] == "could-not-check"
    rc, _, err = check("127.0.0.1:9", "127.0.0.1:0")
    assert rc == 2 and "bad port" in err


def make_cert(d, cn, days=30, dates=None):
    """A self-signed certificate for cn (subjectAltNames cn and smtp.cn):
    valid from now for days, or for dates=(notBefore, notAfter) as
    YYYYMMDDHHMMSSZ, which `openssl req -x509` cannot set: then the request
    is self-signed by `openssl ca -selfsign` with a throwaway database."""
    base = os.path.join(d, "%s-%s" % (cn, dates[0] if dates else days))
    key, crt = base + ".key", base + ".crt"
    san = "subjectAltName=DNS:%s,DNS:smtp.%s" % (cn, cn)
    if not dates:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", crt, "-subj", "/CN=%s" % cn, "-days", str(days),
                        "-addext", san], check=True, capture_output=True)
        return crt, key
    ca = base + ".ca"
    os.makedirs(ca)
    open(os.path.join(ca, "index.txt"), "w").close()
    with open(os.path.join(ca, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(ca, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\nnew_certs_dir = %s\n"
                "serial = %s/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                "unique_subject = no\n[p]\ncommonName = supplied\n" % (ca, ca, ca))
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", base + ".csr", "-subj", "/CN=%s" % cn, "-addext", san],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(ca, "ca.cnf"), "-selfsign",
                    "-keyfile", key, "-in", base + ".csr", "-out", crt, "-notext",
                    "-startdate", dates[0], "-enddate", dates[1]], check=True, capture_output=True)
    return crt, key


def start_postfix(datadir, crt, key):
    """A private Postfix whose smtpd offers STARTTLS with crt and key, and
    greets as mx.example.com (the PTR of 127.0.0.1 in ZONES). Nothing is
    ever relayed: the relayhost port is closed."""
    pf = PostfixInstance(sink_port=free_port(), tls=(crt, key), hostname="mx.example.com",
                         workdir=os.path.join(datadir, "postfix-%d" % free_port()))
    return pf.start()


def smtpd_commands(pf):
    """The command counts Postfix's smtpd logs at the disconnect of the
    last session that sent any (start() probes the port without a command),
    e.g. {"ehlo": 2, "starttls": 1, "quit": 1, "commands": 4}."""
    deadline = time.time() + 10
    while time.time() < deadline:
        found = None
        for line in pf.maillog().splitlines():
            if "smtpd" in line and "disconnect from" in line and "commands=0" not in line:
                found = {k: int(v.split("/")[0]) for k, v in
                         (w.split("=") for w in line.split("]", 2)[2].split() if "=" in w)}
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("no disconnect in the maillog:\n" + pf.maillog())


def test_check_smtp_starttls(datadir, servers):
    dns = start_knot(datadir, ZONES)
    servers.append(dns)
    crt, key = make_cert(datadir, "mx.example.com", 30)
    pf = start_postfix(datadir, crt, key)
    try:
        rc, out, err = check(dns.resolver, "--json", "127.0.0.1:%d" % pf.port)
        doc = json.loads(out)
        assert doc["banner"]["code"] == 220 and doc["banner"]["name"] == "mx.example.com"
        assert doc["starttls"] is True, out + err
        assert doc["tls"]["version"].startswith("TLSv1.")
        cert = doc["tls"]["certificate"]
        assert cert["subject_cn"] == "mx.example.com"
        assert cert["names"] == ["mx.example.com", "smtp.mx.example.com"]
        assert cert["name_matches"] is True and cert["expired"] is False
        assert cert["not_yet_valid"] is False
        assert cert["not_after"][:4] >= time.strftime("%Y")
        assert cert["chain_verified"] is False  # self-signed
        assert doc["ms"]["tls_handshake"] >= 0 and doc["ms"]["ehlo_tls"] >= 0
        # the session Postfix saw: EHLO, STARTTLS, EHLO again inside TLS, QUIT
        assert smtpd_commands(pf) == {"ehlo": 2, "starttls": 1, "quit": 1, "commands": 4}
        # the version and cipher Postfix says it negotiated are the ones reported
        tls_line = [ln for ln in pf.maillog().splitlines()
                    if "TLS connection established from localhost[127.0.0.1]" in ln]
        assert tls_line, pf.maillog()
        assert "%s with cipher %s " % (doc["tls"]["version"], doc["tls"]["cipher"]) in tls_line[0]
        assert doc["ptr_matches_banner"] is True
        warns = " ".join(w["message"] for w in doc["warnings"])
        assert "does not verify" in warns and "under 14 days" not in warns
        assert rc == 0, out  # a self-signed certificate is a warning only

        # the same certificate as a trusted root: the chain verifies, no warning
        p = subprocess.run([MAILREP, "check", "smtp", "--resolver", dns.resolver, "--timeout",
                            "5000", "--json", "127.0.0.1:%d" % pf.port], capture_output=True,
                           timeout=60, env=dict(os.environ, SSL_CERT_FILE=crt))
        doc = json.loads(p.stdout)
        assert doc["tls"]["certificate"]["chain_verified"] is True, p.stdout
        assert not any("does not verify" in w["message"] for w in doc["warnings"])
    finally:
        pf.stop()

    # a certificate for another name: a problem
    crt, key = make_cert(datadir, "wrong.example.org", 30)
    pf = start_postfix(datadir, crt, key)
    try:
        rc, out, _ = check(dns.resolver, "--json", "127.0.0.1:%d" % pf.port)
        doc = json.loads(out)
        assert rc == 1 and doc["tls"]["certificate"]["name_matches"] is False
        assert any("does not name mx.example.com" in p["message"] for p in doc["problems"])
    finally:
        pf.stop()


def test_check_smtp_certificate_dates(datadir, servers):
    """Expired, not yet valid, and expiring within 14 days, each served by
    Postfix's smtpd over STARTTLS."""
    dns = start_knot(datadir, ZONES)
    servers.append(dns)
    cases = [
        (("20200101000000Z", "20210101000000Z"), 1, "expired", "expired on"),
        (("20400101000000Z", "20410101000000Z"), 1, "not_yet_valid", "not valid before"),
        (5, 0, None, "under 14 days"),
    ]
    for when, want_rc, flag, text in cases:
        if isinstance(when, tuple):
            crt, key = make_cert(datadir, "mx.example.com", dates=when)
        else:
            crt, key = make_cert(datadir, "mx.example.com", when)
        pf = start_postfix(datadir, crt, key)
        try:
            rc, out, _ = check(dns.resolver, "--json", "127.0.0.1:%d" % pf.port)
            doc = json.loads(out)
            cert = doc["tls"]["certificate"]
            assert rc == want_rc, out
            findings = doc["problems"] if want_rc else doc["warnings"]
            assert any(text in f["message"] for f in findings), (text, out)
            assert cert["expired"] is (flag == "expired")
            assert cert["not_yet_valid"] is (flag == "not_yet_valid")
        finally:
            pf.stop()
