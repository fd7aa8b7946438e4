"""mailrep check smtp against real SMTP peers on loopback: Postfix's
smtp-sink accepting everything (an open relay, as far as a probe can tell)
and rejecting RCPT (closed), and a STARTTLS-capable server.

smtp-sink cannot do TLS, and Debian has no small SMTP server that can (a
Postfix smtpd instance needs a whole master.cf/queue setup), so STARTTLS is
tested against a minimal server written below on Python's ssl module, with a
certificate made by `openssl req`. The PTR of 127.0.0.1 and the host name
the tests connect to are served by knotd."""
import json
import os
import socket
import ssl
import subprocess
import threading
import time

from conftest import MAILREP, Server, datadir, free_port, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot

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


class TlsSmtpServer:
    """A minimal SMTP server with STARTTLS, for one test: greets, answers
    EHLO with STARTTLS, upgrades, answers EHLO again and QUIT; anything else
    gets 502. Records every command."""

    def __init__(self, certfile, keyfile, banner="mx.example.com"):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.commands = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self.session(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def session(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rwb")
        f.write(b"220 %s ESMTP tls-test\r\n" % self.banner.encode())
        f.flush()
        tls = False
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.strip().decode()
            self.commands.append(cmd.split(" ")[0].upper())
            verb = cmd.split(" ")[0].upper()
            if verb == "EHLO":
                f.write(b"250-%s\r\n250-PIPELINING\r\n" % self.banner.encode() +
                        (b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n"))
            elif verb == "STARTTLS" and not tls:
                f.write(b"220 2.0.0 Ready to start TLS\r\n")
                f.flush()
                conn = self.ctx.wrap_socket(conn, server_side=True)
                f = conn.makefile("rwb")
                tls = True
                continue
            elif verb == "QUIT":
                f.write(b"221 2.0.0 Bye\r\n")
                f.flush()
                return
            else:
                f.write(b"502 5.5.1 not here\r\n")
            f.flush()

    def close(self):
        self.sock.close()


def make_cert(d, cn, days):
    key, crt = os.path.join(d, "%s.key" % cn), os.path.join(d, "%s.crt" % cn)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-subj", "/CN=%s" % cn, "-days", str(days), "-addext",
                    "subjectAltName=DNS:%s,DNS:smtp.%s" % (cn, cn)],
                   check=True, capture_output=True)
    return crt, key


def test_check_smtp_starttls(datadir, servers):
    dns = start_knot(datadir, ZONES)
    servers.append(dns)
    crt, key = make_cert(datadir, "mx.example.com", 30)
    srv = TlsSmtpServer(crt, key)
    try:
        rc, out, err = check(dns.resolver, "--json", "127.0.0.1:%d" % srv.port)
        doc = json.loads(out)
        assert doc["starttls"] is True, out + err
        assert doc["tls"]["version"].startswith("TLSv1.")
        cert = doc["tls"]["certificate"]
        assert cert["subject_cn"] == "mx.example.com"
        assert cert["names"] == ["mx.example.com", "smtp.mx.example.com"]
        assert cert["name_matches"] is True and cert["expired"] is False
        assert cert["not_after"][:4] >= time.strftime("%Y")
        assert cert["chain_verified"] is False  # self-signed
        assert doc["ms"]["tls_handshake"] >= 0 and doc["ms"]["ehlo_tls"] >= 0
        assert srv.commands == ["EHLO", "STARTTLS", "EHLO", "QUIT"], srv.commands
        assert doc["ptr_matches_banner"] is True
        warns = " ".join(w["message"] for w in doc["warnings"])
        assert "does not verify" in warns
        assert rc == 0, out  # a self-signed certificate is a warning only
    finally:
        srv.close()

    # a certificate for another name: a problem
    crt, key = make_cert(datadir, "wrong.example.org", 30)
    srv = TlsSmtpServer(crt, key)
    try:
        rc, out, _ = check(dns.resolver, "--json", "127.0.0.1:%d" % srv.port)
        doc = json.loads(out)
        assert rc == 1 and doc["tls"]["certificate"]["name_matches"] is False
        assert any("does not name mx.example.com" in p["message"] for p in doc["problems"])
    finally:
        srv.close()
