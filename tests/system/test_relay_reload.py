"""SIGHUP makes mailrep relay read its configuration again, without a
restart: the accounts, DKIM keys, trusted networks and bounce rules of the
new file take effect for new sessions and messages, a password that was
removed stops working at once (the cache of recent checks is dropped), and
a configuration with an error is refused with its file:line while the
relay goes on with the one it had. swaks is the submitting client,
smtp-sink the receiver, and `mailrep dkim verify` against knotd checks the
signatures."""
import os
import pwd
import signal
import subprocess

from conftest import MAILREP, datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_tls_util import make_cert, swaks, write_config
from relay_util import events, sink_files, start_relay, start_sink, stop_clean, wait_for
from test_relay_delivery import keygen


def relay_log(relay):
    with open(relay.logpath, errors="replace") as f:
        return f.read()


def hup(relay, count):
    """Sends SIGHUP and waits until the relay has answered it `count` times
    since its start (a reload, or a refusal)."""
    os.kill(relay.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: relay_log(relay).count("reload") >= count), relay_log(relay)


def auth(relay, user, pw, sender="alice@example.com"):
    return swaks(relay.port, "--tls", "--auth", "PLAIN", "--auth-user", user,
                 "--auth-password", pw, sender=sender)


def dkim_domains(relay, sink, n):
    """The d= of each message at the sink, once the relay has logged n
    deliveries (smtp-sink creates its file before the data is in it)."""
    assert wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) >= n)
    files = wait_for(lambda: len(sink_files(sink)) >= n and sink_files(sink))
    assert files, "the sink has %d messages, not %d" % (len(sink_files(sink)), n)
    out = []
    for f in files:
        head = f.split(b"\n\n", 1)[0] if b"\n\n" in f else f
        sig = head[head.find(b"DKIM-Signature:"):] if b"DKIM-Signature:" in head else b""
        out.append(sig.split(b"d=", 1)[1].split(b";", 1)[0].decode() if sig else None)
    return out


def readable_by_relay(path):
    """As root the relay runs as nobody: a reload reads the key files as
    that user, so an operator gives them to it (the relay read them as root
    at the start)."""
    if os.geteuid() == 0:
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)


def test_reload_accounts_and_keys(datadir, servers):
    k1, rec1 = keygen(datadir, "s1", "example.com")
    k2, rec2 = keygen(datadir, "s2", "other.example")
    for k in (k1, k2):
        readable_by_relay(k)
    knot = start_knot(datadir, {"example.com": soa("example.com") + rec1,
                                "other.example": soa("other.example") + rec2})
    servers.append(knot)
    cert, key = make_cert(datadir)
    sink = start_sink(datadir)
    servers.append(sink)
    cfg = write_config(datadir, {"acme": {"password": "acme-pass"}},
                       relay=[("dkim-key", "example.com=s1:" + k1)])
    relay = start_relay(datadir, ["-c", cfg, "--route", "*=" + sink.hop, "--tls-cert", cert,
                                  "--tls-key", key])
    servers.append(relay)

    code, out = auth(relay, "acme", "acme-pass", sender="carol@other.example")
    assert code == 0, out
    # before the reload, other.example's mail gets the service key
    assert dkim_domains(relay, sink, 1) == ["example.com"]

    # a key the relay's user cannot read: refused, nothing changes
    if os.geteuid() == 0:
        k3, _ = keygen(datadir, "s3", "third.example")
        write_config(datadir, {"acme": {"password": "acme-pass"}},
                     relay=[("dkim-key", "example.com=s1:" + k1),
                            ("dkim-key", "third.example=s3:" + k3)])
        hup(relay, 1)
        log = relay_log(relay)
        assert "reload refused" in log and "s3.pem: Permission denied" in log, log

    # the new file: acme's password changes, zeta comes, other.example gets
    # its own key
    write_config(datadir, {"acme": {"password": "acme-new"}, "zeta": {"password": "zeta-pass"}},
                 relay=[("dkim-key", "example.com=s1:" + k1),
                        ("dkim-key", "other.example=s2:" + k2)])
    hup(relay, 2 if os.geteuid() == 0 else 1)
    assert "reloaded: 2 accounts, 2 DKIM keys" in relay_log(relay), relay_log(relay)
    code, out = auth(relay, "acme", "acme-pass")
    assert code != 0 and "535 5.7.8" in out, out  # remembered before, refused now
    code, out = auth(relay, "acme", "acme-new")
    assert code == 0, out
    code, out = auth(relay, "zeta", "zeta-pass", sender="carol@other.example")
    assert code == 0, out
    doms = dkim_domains(relay, sink, 3)
    assert sorted(doms) == ["example.com", "example.com", "other.example"], doms
    for f in sink_files(sink):
        msg = f[f.index(b"DKIM-Signature:"):]
        p = subprocess.run([MAILREP, "dkim", "verify", "--resolver", knot.resolver],
                           input=msg, capture_output=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
    acct = [e["account"] for e in events(relay) if e["event"] == "reception"]
    assert acct == ["acme", "acme", "zeta"], acct

    # a file with an error: refused with its line, the relay goes on as it was
    with open(cfg, "a") as f:
        f.write("\n[relay]\nno-such-setting = 1\n")
    bad_line = sum(1 for _ in open(cfg))
    hup(relay, 3 if os.geteuid() == 0 else 2)
    log = relay_log(relay)
    assert "reload refused" in log and "relay.ini:%d" % bad_line in log, log
    code, out = auth(relay, "zeta", "zeta-pass")
    assert code == 0, out
    assert relay.proc.poll() is None
    stop_clean(relay)


def test_reload_trusted_networks(datadir, servers):
    """The trusted networks come from the file too: a network added by a
    reload may inject without AUTH, one removed may not."""
    sink = start_sink(datadir)
    servers.append(sink)
    cfg = os.path.join(datadir, "trusted.ini")
    with open(cfg, "w") as f:
        f.write("[relay]\ntrusted = 10.0.0.0/8\n")
    relay = start_relay(datadir, ["-c", cfg, "--route", "*=" + sink.hop])
    servers.append(relay)
    code, out = swaks(relay.port)
    assert code != 0 and "554 5.7.1" in out, out
    with open(cfg, "w") as f:
        f.write("[relay]\ntrusted = 127.0.0.1/32\n")
    hup(relay, 1)
    code, out = swaks(relay.port)
    assert code == 0, out
    assert wait_for(lambda: len(sink_files(sink)) == 1)
    with open(cfg, "w") as f:
        f.write("[relay]\ntrusted = 10.0.0.0/8\n")
    hup(relay, 2)
    code, out = swaks(relay.port)
    assert code != 0 and "554 5.7.1" in out, out
    stop_clean(relay)
