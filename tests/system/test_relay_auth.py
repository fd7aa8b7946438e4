"""AUTH (RFC 4954) and accounts in mailrep relay, with swaks as the client.

AUTH is offered only after STARTTLS (538 5.7.11 before it), a wrong
password gets 535 5.7.8 and never grants relay, a bounded number of
failures closes the session; a good one relays like a trusted network and
the accounting log names the account. Per-account hourly and daily limits
count recipients, refuse with a transient 452 4.7.1 that names the limit,
and hold across a clean restart and kill -9. The X-Mailrep-Pool header
picks an allowed pool (and is removed before signing) or is refused with
550 5.7.1. And never an open relay: without AUTH, from outside the trusted
networks, every recipient is refused.

Password checks run on worker threads: while eight slow checks are under
way another client is served at once, a client that leaves during its
check leaves the relay healthy, and a recent success is remembered (only
for the same password). A message written to the spool but not yet
acknowledged when the relay is killed is counted against its account at
the next start."""
import base64
import glob
import hashlib
import os
import select
import signal
import smtplib
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_tls_util import RawSMTP, make_cert, swaks, write_config
from relay_util import (events, message, sink_files, start_relay, start_sink, stop_clean,
                        wait_for)
from test_relay_openrelay import TRICKS

ACCOUNTS = {
    "acme": {"password": "s3cret-acme", "per-hour": 3, "per-day": 4, "pool": "bulk",
             "pools": "tx, promo"},
    "zeta": {"password": "zeta-pass"},
}


def start(datadir, servers, relay_keys=(), extra=(), spool=None, sink=None, trusted=False,
          pools=(), more=""):
    cert, key = make_cert(datadir)
    if sink is None:
        sink = start_sink(datadir)
        servers.append(sink)
    cfg = write_config(datadir, ACCOUNTS, relay=list(relay_keys), pools=pools)
    if more:
        with open(cfg, "a") as f:
            f.write(more)
    args = ["-c", cfg, "--route", "*=" + sink.hop, "--tls-cert", cert, "--tls-key", key]
    if trusted:
        args += ["--trusted", "127.0.0.1/32"]
    relay = start_relay(datadir, args + list(extra), spool=spool)
    relay.args = args + list(extra)
    servers.append(relay)
    return relay, sink, cfg


def plain(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()


def receptions(relay):
    return [e for e in events(relay) if e["event"] == "reception"]


def test_auth_refused_before_tls(datadir, servers):
    relay, sink, _ = start(datadir, servers)
    c = RawSMTP(relay.port)
    ehlo = c.cmd("EHLO client.test")
    assert not any("AUTH" in line for line in ehlo), ehlo
    r = c.cmd("AUTH PLAIN " + plain("acme", "s3cret-acme"))
    assert r[0].startswith("538 5.7.11"), r
    # and it did not authenticate anything
    assert c.cmd("MAIL FROM:<alice@example.com>")[0].startswith("250")
    assert c.cmd("RCPT TO:<bob@dest.example>")[0].startswith("554 5.7.1")
    c.close()
    code, out = swaks(relay.port, "--auth", "PLAIN", "--auth-user", "acme",
                      "--auth-password", "s3cret-acme")
    assert code != 0 and "Host did not advertise authentication" in out, out
    # after STARTTLS it is offered
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls()
    assert "250-AUTH PLAIN LOGIN" in c.cmd("EHLO client.test")
    c.close()
    time.sleep(0.3)
    assert sink_files(sink) == []
    stop_clean(relay)


def test_auth_without_tls_when_configured(datadir, servers):
    relay, sink, _ = start(datadir, servers, relay_keys=[("auth-without-tls", "yes")])
    code, out = swaks(relay.port, "--auth", "LOGIN", "--auth-user", "zeta",
                      "--auth-password", "zeta-pass")
    assert code == 0, out
    assert wait_for(lambda: receptions(relay))
    r = receptions(relay)[0]
    assert r["account"] == "zeta" and r["tls"] is False and r["pool"] is None, r
    stop_clean(relay)


def test_wrong_password_gets_535_and_no_relay(datadir, servers):
    relay, sink, _ = start(datadir, servers)
    code, out = swaks(relay.port, "--tls", "--auth", "PLAIN", "--auth-user", "acme",
                      "--auth-password", "wrong")
    assert code != 0 and "535 5.7.8" in out, out
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO client.test")
    # wrong password, unknown user, another account's password: all 535
    assert c.cmd("AUTH PLAIN " + plain("acme", "zeta-pass"))[0].startswith("535 5.7.8")
    assert c.cmd("MAIL FROM:<alice@example.com>")[0].startswith("250")
    r = c.cmd("RCPT TO:<bob@dest.example>")
    assert r[0].startswith("554 5.7.1"), "a failed AUTH granted relay: %r" % r
    assert c.cmd("RSET")[0].startswith("250")
    assert c.cmd("AUTH PLAIN " + plain("nobody", "s3cret-acme"))[0].startswith("535 5.7.8")
    # a cancelled LOGIN is no authentication either
    assert c.cmd("AUTH LOGIN")[0] == "334 VXNlcm5hbWU6"
    assert c.cmd("*")[0].startswith("501")
    # the third failure closes the session
    r = c.cmd("AUTH PLAIN " + plain("acme", "again-wrong"))
    assert r[0].startswith("535 5.7.8")
    assert c.reply()[0].startswith("421")
    c.close()
    time.sleep(0.3)
    assert sink_files(sink) == [] and receptions(relay) == []
    assert "authentication failed for 'nobody'" in relay.output()
    stop_clean(relay)


def test_plain_and_login_relay_and_the_log_names_the_account(datadir, servers):
    relay, sink, _ = start(datadir, servers)
    for mech, user, pw in (("PLAIN", "acme", "s3cret-acme"), ("LOGIN", "zeta", "zeta-pass")):
        code, out = swaks(relay.port, "--tls", "--auth", mech, "--auth-user", user,
                          "--auth-password", pw)
        assert code == 0, out
        assert "235 2.7.0" in out and "Ok: queued as" in out
    assert wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == 2)
    got = {e["account"]: e for e in receptions(relay)}
    assert set(got) == {"acme", "zeta"}
    assert got["acme"]["pool"] == "bulk" and got["zeta"]["pool"] is None
    assert all(e["tls"] is True for e in got.values())
    dl = {e["account"] for e in events(relay) if e["event"] == "delivery"}
    assert dl == {"acme", "zeta"}
    files = sink_files(sink)
    assert any(b"with ESMTPSA" in f for f in files)
    stop_clean(relay)


def test_pool_header_honoured_refused_and_removed(datadir, servers):
    relay, sink, _ = start(datadir, servers, trusted=False,
                           relay_keys=[("default-pool", "shared")])
    ok = ["--tls", "--auth", "PLAIN", "--auth-user", "acme", "--auth-password", "s3cret-acme"]
    code, out = swaks(relay.port, *ok, "--add-header", "X-Mailrep-Pool: tx",
                      "--header", "Subject: pool-tx")
    assert code == 0, out
    code, out = swaks(relay.port, *ok, "--add-header", "X-Mailrep-Pool: other")
    assert code != 0 and "550 5.7.1" in out and "pool other" in out, out
    # zeta has no pool: the default pool
    code, out = swaks(relay.port, "--tls", "--auth", "PLAIN", "--auth-user", "zeta",
                      "--auth-password", "zeta-pass", "--header", "Subject: pool-default")
    assert code == 0, out
    assert wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == 2)
    pools = sorted((e["account"], e["pool"]) for e in receptions(relay))
    assert pools == [("acme", "tx"), ("zeta", "shared")], pools
    for f in sink_files(sink):
        assert b"X-Mailrep-Pool" not in f, "the pool header was delivered"
    stop_clean(relay)


def test_trusted_network_chooses_any_pool(datadir, servers):
    relay, sink, _ = start(datadir, servers, trusted=True, pools=["other.pool"])
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    s.ehlo("client.test")
    data = "X-Mailrep-Pool: other.pool\r\n" + message("trusted-pool")
    s.sendmail("alice@example.com", ["bob@dest.example"], data)
    # a pool that is not configured is refused, not queued to wait forever
    bad = "X-Mailrep-Pool: no.such.pool\r\n" + message("trusted-nopool")
    try:
        s.sendmail("alice@example.com", ["bob@dest.example"], bad)
        raise AssertionError("a message for an unknown pool was accepted")
    except smtplib.SMTPDataError as e:
        assert e.smtp_code == 550 and b"no IP pool named no.such.pool" in e.smtp_error, e
    s.quit()
    assert wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"])
    r = receptions(relay)
    assert len(r) == 1 and r[0]["pool"] == "other.pool" and r[0]["account"] is None, r
    stop_clean(relay)


def send_one(port, n=1, tag="x"):
    """One message with n recipients as acme over TLS; returns the swaks run."""
    rcpts = ",".join("r%d-%s@dest.example" % (i, tag) for i in range(n))
    return swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "acme",
                 "--auth-password", "s3cret-acme", rcpt=rcpts)


def test_limits_hold_across_restart_and_kill_9(datadir, servers, monkeypatch):
    clock = os.path.join(datadir, "clock")
    with open(clock, "w") as f:
        f.write("2026-03-01T10:05:00Z\n")
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    spool = os.path.join(datadir, "spool")
    relay, sink, cfg = start(datadir, servers, spool=spool)
    # per-hour 3 recipients: a message to 2, then one to 1
    assert send_one(relay.port, 2, "a")[0] == 0
    assert send_one(relay.port, 1, "b")[0] == 0
    code, out = send_one(relay.port, 1, "c")
    assert code != 0 and "452 4.7.1" in out and "hourly limit of 3" in out, out

    def restarted(kill):
        relay.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        relay.proc.wait(20)
        again = start_relay(datadir, relay.args, spool=spool, port=relay.port)
        again.args = relay.args
        servers.append(again)
        return again

    relay = restarted(kill=False)
    code, out = send_one(relay.port, 1, "d")
    assert code != 0 and "452 4.7.1" in out, "limit forgotten after a restart: " + out
    relay = restarted(kill=True)
    code, out = send_one(relay.port, 1, "e")
    assert code != 0 and "452 4.7.1" in out, "limit forgotten after kill -9: " + out
    # the next hour: 1 more fits under the daily limit of 4, then the day is full
    with open(clock, "w") as f:
        f.write("2026-03-01T11:00:01Z\n")
    assert send_one(relay.port, 1, "f")[0] == 0
    code, out = send_one(relay.port, 1, "g")
    assert code != 0 and "452 4.7.1" in out and "daily limit of 4" in out, out
    # zeta has no limits and is not affected
    code, out = swaks(relay.port, "--tls", "--auth", "PLAIN", "--auth-user", "zeta",
                      "--auth-password", "zeta-pass")
    assert code == 0, out
    rc = [e for e in receptions(relay) if e["account"] == "acme"]
    assert sum(e["rcpts"] for e in rc) == 4
    stop_clean(relay)


def test_never_an_open_relay_with_accounts(datadir, servers):
    """Accounts configured, no trusted network: without AUTH every trick is
    refused; with AUTH the tricks that need a second routing step still are."""
    relay, sink, _ = start(datadir, servers)
    for rcpt in TRICKS:
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        s.ehlo("relay.test")
        s.mail("spammer@bad.example")
        raw = rcpt if rcpt.startswith("<") else "<%s>" % rcpt
        code, msg = s.docmd("RCPT TO:" + raw)
        assert code == 554 and b"5.7.1" in msg, (rcpt, code, msg)
        s.quit()
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls()
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN " + plain("acme", "s3cret-acme"))[0].startswith("235")
    for rcpt in TRICKS[1:]:
        assert c.cmd("MAIL FROM:<alice@example.com>")[0].startswith("250")
        raw = rcpt if rcpt.startswith("<") else "<%s>" % rcpt
        r = c.cmd("RCPT TO:" + raw)
        assert not r[0].startswith("250"), (rcpt, r)
        c.cmd("RSET")
    c.close()
    time.sleep(0.3)
    assert sink_files(sink) == [] and receptions(relay) == []
    stop_clean(relay)


def pbkdf2_hash(pw, iterations):
    """A password hash in the relay's format, with a chosen cost."""
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, iterations, 32)

    def b64(b):
        return base64.b64encode(b).decode().rstrip("=")
    return "$pbkdf2-sha256$%d$%s$%s" % (iterations, b64(salt), b64(dk))


# An account whose check costs three times the default: eight of them keep
# both worker threads of a 2-core machine busy for a good while.
SLOW = "\n[account slow]\npassword = %s\n" % pbkdf2_hash("slow-pass", 300000)


def raw(port):
    """A raw session that waits long for replies (slow checks, busy machine)."""
    c = RawSMTP(port)
    c.sock.settimeout(120)
    return c


def test_password_checks_do_not_block_the_loop(datadir, servers):
    relay, sink, _ = start(datadir, servers, relay_keys=[("auth-without-tls", "yes")],
                           more=SLOW)
    conns = []
    for i in range(8):
        c = raw(relay.port)
        assert c.cmd("EHLO client%d.test" % i)[-1].startswith("250 ")
        conns.append(c)
    for i, c in enumerate(conns):
        c.send(("AUTH PLAIN %s\r\n" % plain("slow", "slow-pass" if i % 2 else "wrong")).encode())
    # another client, after all eight AUTH commands went out, is greeted
    # and answered while the checks are still running
    other = RawSMTP(relay.port)
    assert other.greeting[0].startswith("220 ")
    assert other.cmd("EHLO other.test")[-1].startswith("250 ")
    ready, _, _ = select.select([c.sock for c in conns], [], [], 0)
    assert len(ready) < len(conns), \
        "every AUTH was answered before a later EHLO: the checks block the loop"
    other.close()
    codes = sorted(c.reply()[0][:3] for c in conns)
    assert codes == ["235"] * 4 + ["535"] * 4, codes
    # and an authenticated session of them relays
    ok = conns[1]
    assert ok.cmd("MAIL FROM:<alice@example.com>")[0].startswith("250")
    assert ok.cmd("RCPT TO:<bob@dest.example>")[0].startswith("250")
    assert ok.cmd("DATA")[0].startswith("354")
    assert ok.cmd(message("after-slow-auth") + ".")[0].startswith("250 2.0.0 Ok: queued")
    for c in conns:
        c.close()
    assert wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"])
    assert receptions(relay)[0]["account"] == "slow"
    stop_clean(relay)


def test_client_gone_during_the_check(datadir, servers):
    relay, sink, _ = start(datadir, servers, relay_keys=[("auth-without-tls", "yes")],
                           more=SLOW)
    # leave during the check: PLAIN, LOGIN, and with commands pipelined behind
    for i in range(6):
        c = RawSMTP(relay.port)
        c.cmd("EHLO client.test")
        if i % 3 == 0:
            c.send(("AUTH PLAIN %s\r\n" % plain("slow", "slow-pass")).encode())
        elif i % 3 == 1:
            assert c.cmd("AUTH LOGIN")[0].startswith("334")
            assert c.cmd(base64.b64encode(b"slow").decode())[0].startswith("334")
            c.send(base64.b64encode(b"wrong").decode().encode() + b"\r\n")
        else:
            c.send(("AUTH PLAIN %s\r\nMAIL FROM:<a@example.com>\r\n"
                    "RCPT TO:<b@dest.example>\r\nDATA\r\n" % plain("nobody", "x")).encode())
        c.close()
    # the relay goes on: an account authenticates and its mail is delivered
    code, out = swaks(relay.port, "--auth", "PLAIN", "--auth-user", "zeta",
                      "--auth-password", "zeta-pass")
    assert code == 0, out
    assert wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"])
    # pipelined commands behind a check run once it is done
    c = raw(relay.port)
    c.cmd("EHLO client.test")
    c.send(("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<p@dest.example>\r\n"
            "RSET\r\n" % plain("slow", "slow-pass")).encode())
    assert c.reply()[0].startswith("235")
    assert c.reply()[0].startswith("250")
    assert c.reply()[0].startswith("250")
    assert c.reply()[0].startswith("250")
    # and a stop while checks are under way is clean
    for _ in range(3):
        c = RawSMTP(relay.port)
        c.cmd("EHLO client.test")
        c.send(("AUTH PLAIN %s\r\n" % plain("slow", "wrong")).encode())
    time.sleep(0.05)
    stop_clean(relay)


def test_recent_success_is_remembered_for_that_password_only(datadir, servers):
    relay, sink, _ = start(datadir, servers)
    ok = ["--tls", "--auth", "PLAIN", "--auth-user", "acme", "--auth-password", "s3cret-acme"]
    assert swaks(relay.port, *ok)[0] == 0
    assert swaks(relay.port, *ok)[0] == 0
    out = relay.output()
    assert out.count("authenticated as acme (cached)") == 1, out
    assert out.count("authenticated as acme\n") == 1, out
    code, out = swaks(relay.port, "--tls", "--auth", "PLAIN", "--auth-user", "acme",
                      "--auth-password", "s3cret-acme2")
    assert code != 0 and "535 5.7.8" in out, out
    # a restart starts with an empty cache
    relay.proc.send_signal(signal.SIGTERM)
    relay.proc.wait(20)
    again = start_relay(datadir, relay.args, spool=relay.spool, port=relay.port)
    servers.append(again)
    assert swaks(again.port, *ok)[0] == 0
    assert "(cached)" not in again.output()
    stop_clean(again)


def spool_bytes(spool):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(spool, "seg-*")))


def test_unacknowledged_message_counted_after_kill_9(datadir, servers):
    """With a 1 s commit window a message is in the spool well before its
    250; killed then, it is recovered (and delivered) and must count."""
    spool = os.path.join(datadir, "spool")
    sink = start_sink(datadir)
    servers.append(sink)
    relay, _, _ = start(datadir, servers, spool=spool, sink=sink,
                        relay_keys=[("auth-without-tls", "yes")],
                        extra=["--commit-delay", "1000000"])
    assert send_one(relay.port, 2, "acked")[0] == 0  # acme: 2 of 3 this hour
    c = RawSMTP(relay.port)
    c.cmd("EHLO client.test")
    assert c.cmd("AUTH PLAIN " + plain("acme", "s3cret-acme"))[0].startswith("235")
    assert c.cmd("MAIL FROM:<alice@example.com>")[0].startswith("250")
    assert c.cmd("RCPT TO:<inflight@dest.example>")[0].startswith("250")
    assert c.cmd("DATA")[0].startswith("354")
    before = spool_bytes(spool)
    c.send((message("inflight") + ".\r\n").encode())
    assert wait_for(lambda: spool_bytes(spool) > before, timeout=0.8, step=0.005)
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(20)
    c.close()
    args = [a for a in relay.args if a not in ("--commit-delay", "1000000")]
    again = start_relay(datadir, args, spool=spool, port=relay.port)
    servers.append(again)
    assert "send limits: 1 messages in the spool counted again" in again.output()
    code, out = send_one(again.port, 1, "over")
    assert code != 0 and "452 4.7.1" in out and "hourly limit of 3" in out, out
    # the recovered message is delivered (at least once)
    assert wait_for(lambda: any(b"inflight" in f for f in sink_files(sink)), timeout=30)
    # and a clean restart does not count it again
    again.proc.send_signal(signal.SIGTERM)
    again.proc.wait(20)
    third = start_relay(datadir, args, spool=spool, port=again.port)
    servers.append(third)
    assert "counted again" not in third.output()
    stop_clean(third)
