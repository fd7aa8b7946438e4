"""STARTTLS on both sides of mailrep relay.

Reception (RFC 3207): STARTTLS is offered only with a certificate and only
before TLS; whatever the client pipelined behind STARTTLS in plain text is
never executed (CVE-2011-0411) and a new EHLO is required; a failed
handshake is logged with the client's IP and the relay keeps serving.

Delivery: a relay delivers to a second mailrep relay that has a
certificate, under the policies required, opportunistic, verify and off,
verify checking the MX host's (or a named route's) name against the
certificate, and the tls field of the accounting events on both sides tells the truth;
with policy required towards smtp-sink (which offers no STARTTLS) the mail
is deferred with 4.7.5 and never sent in plain text."""
import os
import socket
import ssl
import time
import warnings

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_tls_util import RawSMTP, make_cert
from relay_util import (events, message, sink_files, start_relay, start_sink, stop_clean,
                        submit, wait_for)


def tls_relay(datadir, servers, extra=(), sub="rx", name="relay.test"):
    d = os.path.join(datadir, sub)
    os.makedirs(d, exist_ok=True)
    cert, key = make_cert(d, name=name)
    sink = start_sink(d)
    servers.append(sink)
    relay = start_relay(d, ["--trusted", "127.0.0.1/32", "--route", "*=" + sink.hop,
                            "--tls-cert", cert, "--tls-key", key] + list(extra))
    servers.append(relay)
    return relay, sink, cert


def test_starttls_offered_only_with_certificate_and_before_tls(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    plain = start_relay(datadir, ["--trusted", "127.0.0.1/32", "--route", "*=" + sink.hop],
                        spool=os.path.join(datadir, "spool-plain"))
    servers.append(plain)
    c = RawSMTP(plain.port)
    ehlo = c.cmd("EHLO client.test")
    assert not any("STARTTLS" in line for line in ehlo), ehlo
    assert c.cmd("STARTTLS")[0].startswith("502"), "STARTTLS without a certificate"
    c.close()

    relay, _, _ = tls_relay(datadir, servers)
    c = RawSMTP(relay.port)
    ehlo = c.cmd("EHLO client.test")
    assert "250-STARTTLS" in ehlo, ehlo
    assert c.cmd("STARTTLS")[0].startswith("220 2.0.0")
    c.starttls()
    ehlo = c.cmd("EHLO client.test")
    assert ehlo[0].startswith("250-relay.test")
    assert not any("STARTTLS" in line for line in ehlo), "STARTTLS offered again in TLS"
    assert c.cmd("STARTTLS")[0].startswith("502")
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    c.close()
    stop_clean(relay)


def test_starttls_injection_is_not_executed(datadir, servers):
    relay, sink, _ = tls_relay(datadir, servers)
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    # one packet: STARTTLS and a command behind it, in plain text
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert c.reply()[0].startswith("220 2.0.0")
    time.sleep(0.3)  # give an injected command every chance to be answered
    c.sock.setblocking(False)
    try:
        stray = c.sock.recv(4096)
    except BlockingIOError:
        stray = b""
    c.sock.setblocking(True)
    assert stray == b"", "a reply to the injected command in plain text: %r" % stray
    c.starttls()
    # the session starts over: no EHLO yet, and no transaction from before
    assert c.cmd("MAIL FROM:<a@example.com>")[0].startswith("503"), "EHLO not required"
    assert c.cmd("EHLO client.test")[0].startswith("250-relay.test")
    r = c.cmd("MAIL FROM:<alice@example.com>")
    assert r[0].startswith("250"), "the injected MAIL was executed: %r" % r
    assert c.cmd("RCPT TO:<bob@dest.example>")[0].startswith("250")
    assert c.cmd("DATA")[0].startswith("354")
    c.send(message("tls-inject").encode() + b".\r\n")
    assert c.reply()[0].startswith("250 2.0.0 Ok: queued")
    c.cmd("QUIT")
    c.close()
    assert wait_for(lambda: deliveries(relay)), relay.output()
    files = sink_files(sink)
    assert len(files) == 1 and b"injected@evil.example" not in files[0]
    assert b"X-Mail-Args: <alice@example.com>" in files[0]
    rec = [e for e in events(relay) if e["event"] == "reception"]
    assert len(rec) == 1 and rec[0]["tls"] is True and rec[0]["sender"] == "alice@example.com"
    stop_clean(relay)


def test_failed_handshake_is_logged_and_harmless(datadir, servers):
    relay, sink, _ = tls_relay(datadir, servers)
    for junk in (b"this is not a TLS record\r\n" * 4, b"\x16\x03\x01\x00\x05hello", b""):
        c = RawSMTP(relay.port)
        c.cmd("EHLO client.test")
        assert c.cmd("STARTTLS")[0].startswith("220")
        if junk:
            c.send(junk)
        c.close()
    # a TLS client that offers only TLS 1.1 is refused (TLS 1.2 minimum)
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS")[0].startswith("220")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    old_ok = True
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.wrap_socket(c.sock, server_hostname="relay.test")
    except (ssl.SSLError, OSError):
        old_ok = False
    assert not old_ok, "a TLS 1.1 handshake succeeded"
    c.close()
    out = wait_for(lambda: relay.output().count("TLS handshake with 127.0.0.1 failed") >= 3
                   and relay.output())
    assert out, relay.output()
    # still serving
    submit(relay.port, "alice@example.com", ["bob@dest.example"])
    assert wait_for(lambda: deliveries(relay))
    stop_clean(relay)


def two_relays(datadir, servers, policy, receiver_tls=True, extra=()):
    """Relay A (the sender, --tls-policy) delivering to relay B (a TLS
    receiver when receiver_tls) that passes the mail on to smtp-sink."""
    if receiver_tls:
        b, sink, cert = tls_relay(datadir, servers, sub="b")
    else:
        b, sink, cert = None, None, None
    a_dir = os.path.join(datadir, "a")
    os.makedirs(a_dir, exist_ok=True)
    target = "127.0.0.1:%d" % b.port if b else None
    if not b:
        sink = start_sink(a_dir)
        servers.append(sink)
        target = sink.hop
    a = start_relay(a_dir, ["--trusted", "127.0.0.1/32", "--route", "*=" + target,
                            "--retry-schedule", "1h", "--tls-policy", policy] + list(extra))
    servers.append(a)
    return a, b, sink, cert


def deliveries(relay, kind="delivery"):
    return [e for e in events(relay) if e["event"] == kind]


def run_policy(datadir, servers, policy, want_tls, extra=()):
    a, b, sink, cert = two_relays(datadir, servers, policy, extra=extra)
    submit(a.port, "alice@example.com", ["bob@dest.example"], data=message(policy))
    assert wait_for(lambda: deliveries(a)), a.output()
    assert wait_for(lambda: deliveries(b)), b.output()
    d = deliveries(a)[0]
    assert d["tls"] is want_tls, d
    rec = [e for e in events(b) if e["event"] == "reception"]
    assert len(rec) == 1 and rec[0]["tls"] is want_tls, rec
    # B received it with ESMTPS exactly when TLS was used
    assert (b"with ESMTPS" in sink_files(sink)[0]) is want_tls
    stop_clean(a)
    stop_clean(b)


def test_policy_required_delivers_over_tls(datadir, servers):
    run_policy(datadir, servers, "dest.example=required", True)


def test_policy_opportunistic_uses_offered_tls(datadir, servers):
    run_policy(datadir, servers, "*=opportunistic", True)


def test_policy_off_stays_plain(datadir, servers):
    run_policy(datadir, servers, "*=off", False)


def test_policy_verify_with_the_right_ca(datadir, servers):
    b_dir = os.path.join(datadir, "b")
    os.makedirs(b_dir, exist_ok=True)
    # tls_relay() makes the certificate in b/; the CA file is that certificate
    run_policy(datadir, servers, "*=verify", True,
               extra=["--tls-ca", os.path.join(b_dir, "tls-cert.pem")])


def test_policy_verify_refuses_an_unknown_certificate(datadir, servers):
    other, _ = make_cert(datadir, name="other.test", prefix="other")
    a, b, sink, _ = two_relays(datadir, servers, "*=verify", extra=["--tls-ca", other])
    submit(a.port, "alice@example.com", ["bob@dest.example"])
    t = wait_for(lambda: deliveries(a, "transient"))
    assert t and "4.7.5" in t[0]["reply"] and "handshake" in t[0]["reply"], t
    time.sleep(0.5)
    assert sink_files(sink) == [] and deliveries(a) == []
    assert [e for e in events(b) if e["event"] == "reception"] == []
    assert "TLS handshake with 127.0.0.1" in a.output()
    stop_clean(a)
    stop_clean(b)


def test_policy_required_towards_a_plain_server_defers(datadir, servers):
    a, _, sink, _ = two_relays(datadir, servers, "dest.example=required",
                               receiver_tls=False)
    submit(a.port, "alice@example.com", ["bob@dest.example"])
    # a domain without a policy still goes out (opportunistic, in plain text here)
    submit(a.port, "alice@example.com", ["carol@other.example"], data=message("other"))
    t = wait_for(lambda: deliveries(a, "transient"))
    assert t, a.output()
    assert t[0]["rcpt"] == "bob@dest.example" and "4.7.5" in t[0]["reply"], t
    assert t[0]["tls"] is False
    assert wait_for(lambda: deliveries(a))
    time.sleep(0.5)
    files = sink_files(sink)
    assert len(files) == 1 and b"X-Rcpt-Args: <carol@other.example>" in files[0], files
    assert all(b"X-Rcpt-Args: <bob@dest.example>" not in f for f in files)
    assert [d["rcpt"] for d in deliveries(a)] == ["carol@other.example"]
    stop_clean(a)


def test_policy_verify_checks_the_mx_host_name(datadir, servers):
    """Relay B has a certificate for mx.tls.example (and IP 127.0.0.1),
    and relay A trusts exactly that certificate, so the chain verifies for
    every domain below; only the name differs. right.example's MX is
    mx.tls.example: delivered over TLS. wrong.example's MX,
    other.wrong.example, has B's address but not its name: deferred with
    4.7.5, nothing delivered. The same for static routes naming a host."""
    from knot import soa, start_knot
    b, sink, cert = tls_relay(datadir, servers, sub="b", name="mx.tls.example")
    zones = {
        "tls.example": soa("tls.example") + "mx A 127.0.0.1\n",
        "right.example": soa("right.example") + "@ MX 10 mx.tls.example.\n",
        "wrong.example": soa("wrong.example") + "@ MX 10 other\nother A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    a_dir = os.path.join(datadir, "a")
    os.makedirs(a_dir, exist_ok=True)
    a = start_relay(a_dir, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                            "--smtp-port", str(b.port), "--retry-schedule", "1h",
                            "--route", "routed.example=mx.tls.example:%d" % b.port,
                            "--route", "misrouted.example=other.wrong.example:%d" % b.port,
                            "--tls-policy", "*=verify", "--tls-ca", cert])
    servers.append(a)
    for rcpt in ("bob@right.example", "carol@wrong.example", "dave@routed.example",
                 "erin@misrouted.example"):
        submit(a.port, "alice@example.com", [rcpt], data=message(rcpt))
    ok = wait_for(lambda: len(deliveries(a)) == 2 and deliveries(a))
    assert ok, a.output()
    assert sorted(e["rcpt"] for e in ok) == ["bob@right.example", "dave@routed.example"]
    assert all(e["tls"] is True and e["mx"] == "127.0.0.1:%d" % b.port for e in ok), ok
    t = wait_for(lambda: len(deliveries(a, "transient")) == 2 and deliveries(a, "transient"))
    assert t, a.output()
    assert sorted(e["rcpt"] for e in t) == ["carol@wrong.example", "erin@misrouted.example"]
    for e in t:
        assert e["code"] == 451 and "4.7.5" in e["reply"], e
        assert "hostname mismatch" in e["reply"] and "other.wrong.example" in e["reply"], e
    assert wait_for(lambda: len(deliveries(b)) == 2), b.output()
    time.sleep(0.5)
    assert len([e for e in events(b) if e["event"] == "reception"]) == 2
    assert sorted(e["rcpt"] for e in deliveries(b)) == ["bob@right.example",
                                                        "dave@routed.example"]
    files = sink_files(sink)
    assert len(files) == 2 and all(b"wrong.example>" not in f for f in files), files
    stop_clean(a)
    stop_clean(b)


class BrokenTLSServer:
    """An SMTP server on 127.0.0.2 that offers STARTTLS, answers it with 220
    and then sends garbage instead of a TLS handshake. Without STARTTLS it
    takes mail in plain text (what an opportunistic client falls back to)."""

    def __init__(self, port):
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.2", port))
        self.sock.listen(16)
        self.connections = 0
        self.starttls = 0
        self.rcpts = []  # accepted in plain text
        self.messages = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self.session(c)
            except OSError:
                pass
            c.close()

    def session(self, c):
        c.settimeout(10)
        f = c.makefile("rb")
        c.sendall(b"220 broken.test ESMTP\r\n")
        data = False
        while True:
            line = f.readline()
            if not line:
                return
            if data:
                if line == b".\r\n":
                    data = False
                    self.messages += 1
                    c.sendall(b"250 2.0.0 Ok\r\n")
                continue
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO"):
                c.sendall(b"250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            elif cmd == b"STARTTLS":
                self.starttls += 1
                c.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                c.sendall(b"this is not a TLS server hello\r\n" * 4)
                time.sleep(0.2)
                return
            elif cmd.startswith(b"RCPT TO:"):
                self.rcpts.append(line[8:].strip().decode())
                c.sendall(b"250 2.1.5 Ok\r\n")
            elif cmd == b"DATA":
                data = True
                c.sendall(b"354 go ahead\r\n")
            elif cmd == b"QUIT":
                c.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                c.sendall(b"250 2.0.0 Ok\r\n")

    def stop(self):
        self.stopping = True
        self.sock.close()


def test_failed_handshake_moves_on_or_falls_back_to_plain_text(datadir, servers):
    """MX hosts on 127.0.0.2 fail every STARTTLS handshake; relay B on
    127.0.0.1 (same port) does TLS. Under required, failover.example
    (broken MX first, B second) is delivered by B over TLS; only.example,
    whose one MX is broken, is deferred with 4.7.5 and nothing is sent to
    it. Under opportunistic, opp.example's broken MX gets the mail again on
    a new connection in plain text, without STARTTLS."""
    from knot import soa, start_knot
    b, sink, cert = tls_relay(datadir, servers, sub="b", name="mx.tls.example")
    broken = BrokenTLSServer(b.port)
    try:
        zones = {
            "tls.example": soa("tls.example") + "mx A 127.0.0.1\nbad1 A 127.0.0.2\n"
            "bad2 A 127.0.0.2\nbad3 A 127.0.0.2\n",
            "failover.example": soa("failover.example") +
            "@ MX 10 bad1.tls.example.\n@ MX 20 mx.tls.example.\n",
            "only.example": soa("only.example") + "@ MX 10 bad2.tls.example.\n",
            "opp.example": soa("opp.example") + "@ MX 10 bad3.tls.example.\n",
        }
        knot = start_knot(datadir, zones)
        servers.append(knot)
        a_dir = os.path.join(datadir, "a")
        os.makedirs(a_dir, exist_ok=True)
        a = start_relay(a_dir, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                                "--smtp-port", str(b.port), "--retry-schedule", "1h",
                                "--tls-policy", "*=required",
                                "--tls-policy", "opp.example=opportunistic",
                                # a new connection for each message: none is reused
                                "--msgs-per-conn", "1"])
        servers.append(a)
        submit(a.port, "alice@example.com", ["bob@failover.example"], data=message("fo"))
        ok = wait_for(lambda: deliveries(a))
        assert ok, a.output()
        assert ok[0]["tls"] is True and ok[0]["mx"] == "127.0.0.1:%d" % b.port, ok
        assert broken.starttls == 1 and broken.rcpts == []
        assert wait_for(lambda: len(sink_files(sink)) == 1), b.output()
        # the failed handshake is remembered (--dead-time): the next message
        # for the site goes straight to B, without a connection to 127.0.0.2
        submit(a.port, "alice@example.com", ["erin@failover.example"], data=message("fo2"))
        ok = wait_for(lambda: len(deliveries(a)) == 2 and deliveries(a))
        assert ok and ok[1]["rcpt"] == "erin@failover.example" and ok[1]["tls"] is True, ok
        assert broken.starttls == 1 and broken.connections == 1
        assert wait_for(lambda: len(sink_files(sink)) == 2), b.output()

        submit(a.port, "alice@example.com", ["carol@only.example"], data=message("only"))
        t = wait_for(lambda: deliveries(a, "transient"))
        assert t, a.output()
        assert t[0]["rcpt"] == "carol@only.example" and t[0]["code"] == 451, t
        assert "4.7.5 TLS handshake failed" in t[0]["reply"], t
        assert broken.starttls == 2 and broken.rcpts == []

        # opportunistic TLS needs no TLS: the memory does not keep it away
        submit(a.port, "alice@example.com", ["dave@opp.example"], data=message("opp"))
        ok = wait_for(lambda: len(deliveries(a)) == 3 and deliveries(a))
        assert ok, a.output()
        assert ok[2]["rcpt"] == "dave@opp.example" and ok[2]["tls"] is False
        assert ok[2]["mx"] == "127.0.0.2:%d" % b.port
        assert broken.starttls == 3 and broken.rcpts == ["<dave@opp.example>"]
        assert broken.messages == 1 and broken.connections == 4
        assert "retrying in plain text" in a.output()
        stop_clean(a)
        stop_clean(b)
    finally:
        broken.stop()
