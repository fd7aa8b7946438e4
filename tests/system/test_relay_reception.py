"""mailrep relay's reception limits and configuration, and the client's
HELO fallback: EHLO advertises the extensions, SIZE is enforced at MAIL
and during DATA, recipients per message are bounded, over-long lines are
refused; a [relay] INI section configures the relay and flags override
it; a receiver that refuses EHLO gets HELO and unpipelined commands."""
import os
import smtplib

from conftest import datadir, free_port, servers  # noqa: F401 (fixtures)
from relay_util import CountingSink, events, message, sink_files, start_relay, start_sink, \
    stop_clean, submit, wait_for


def test_limits(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--max-size", "20000", "--max-rcpts", "3"])
    servers.append(relay)
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    code, text = s.ehlo("client.test")
    assert code == 250
    for ext in (b"SIZE 20000", b"PIPELINING", b"8BITMIME", b"ENHANCEDSTATUSCODES", b"SMTPUTF8"):
        assert ext in text.split(b"\n") or ext in text, text
    assert s.docmd("MAIL FROM:<a@example.com> SIZE=20001")[0] == 552
    assert s.docmd("MAIL FROM:<a@example.com> SIZE=19000 BODY=8BITMIME")[0] == 250
    for i in range(3):
        assert s.rcpt("u%d@dest.example" % i)[0] == 250
    assert s.rcpt("u9@dest.example")[0] == 452
    code, _ = s.data((message("big") + "x" * 30000 + "\r\n").encode())
    assert code == 552
    assert s.docmd("X" * 600)[0] == 500
    # the session is still usable, and an ordinary message goes through
    qid = submit(relay.port, "a@example.com", ["u@dest.example"], message("ok"), conn=s)
    s.quit()
    assert wait_for(lambda: len(sink_files(sink)) == 1)
    assert [e["id"] for e in events(relay) if e["event"] == "reception"] == [qid]
    stop_clean(relay)


def test_config_file_and_flags(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    other = start_sink(datadir)
    servers.append(other)
    conf = os.path.join(datadir, "relay.ini")
    with open(conf, "w") as f:
        f.write("[trap]\nlisten = 127.0.0.1:1\n\n[relay]\n"
                "trusted = 10.0.0.0/8\n"        # replaced by the flag below
                "route = *=%s\n"                 # kept: no --route flag
                "max-rcpts = 2\n" % other.hop)
    relay = start_relay(datadir, ["-c", conf, "--trusted", "127.0.0.1"])
    servers.append(relay)
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    s.ehlo("client.test")
    s.mail("a@example.com")
    assert s.rcpt("u1@dest.example")[0] == 250  # trusted by the flag
    assert s.rcpt("u2@dest.example")[0] == 250
    assert s.rcpt("u3@dest.example")[0] == 452  # max-rcpts from the file
    assert s.data(message("conf").encode())[0] == 250
    s.quit()
    assert wait_for(lambda: len(sink_files(other)) == 1)  # the route from the file
    assert sink_files(sink) == []
    stop_clean(relay)

    bad = os.path.join(datadir, "bad.ini")
    with open(bad, "w") as f:
        f.write("[relay]\nlisten = 127.0.0.1:%d\nspool = %s\nno-such-key = 1\n" % (
            free_port(), os.path.join(datadir, "spool2")))
    import subprocess
    from conftest import MAILREP
    p = subprocess.run([MAILREP, "relay", "-c", bad], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"bad.ini:4" in p.stderr, p.stderr


def test_helo_fallback_without_pipelining(datadir, servers):
    sink = CountingSink(delay=0, esmtp=False)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1"])
        servers.append(relay)
        submit(relay.port, "a@example.com", ["u1@dest.example", "u2@dest.example"])
        assert wait_for(lambda: sink.messages == 1)
        verbs = [c.split(b" ")[0].split(b":")[0].upper() for c in sink.commands]
        assert verbs[:2] == [b"EHLO", b"HELO"], sink.commands
        assert verbs[2:6] == [b"MAIL", b"RCPT", b"RCPT", b"DATA"], sink.commands
        assert not any(b"SIZE=" in c for c in sink.commands)  # no ESMTP parameters after HELO
        assert sink.pipelined == 0  # each command waited for its reply
        stop_clean(relay)
    finally:
        sink.stop()


def test_messages_per_connection(datadir, servers):
    sink = CountingSink(delay=0.05)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "1",
                                      "--msgs-per-conn", "2"])
        servers.append(relay)
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        s.ehlo("client.test")
        for i in range(8):
            submit(relay.port, "a@example.com", ["u%d@dest.example" % i], conn=s)
        s.quit()
        assert wait_for(lambda: sink.messages == 8 and sum(sink.per_conn) == 8, timeout=30)
        assert max(sink.per_conn) == 2, sink.per_conn  # reused, but never beyond the limit
        assert sink.max == 1
        stop_clean(relay)
    finally:
        sink.stop()


def test_sign_threads(datadir, servers):
    """--sign-threads sets how many signing threads the relay starts; every
    message is still signed; out-of-range values are refused."""
    import subprocess
    from conftest import MAILREP
    from test_relay_delivery import keygen
    key, _ = keygen(datadir, "s1", "example.com")
    threads = {}
    for n in (1, 3):
        sink = start_sink(datadir)
        servers.append(sink)
        relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                      "--dkim-key", "example.com=s1:" + key,
                                      "--sign-threads", str(n)], name="relay%d" % n)
        servers.append(relay)
        submit(relay.port, "a@example.com", ["u@dest.example"], message("threads %d" % n))
        files = wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"] and
                         sink_files(sink))
        assert files and b"DKIM-Signature:" in files[0], files
        threads[n] = len(os.listdir("/proc/%d/task" % relay.proc.pid))
        stop_clean(relay)
    assert threads[3] - threads[1] == 2, threads
    for bad in ("65", "x", "-1"):
        p = subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:%d" % free_port(),
                            "--spool", os.path.join(datadir, "spool-bad"),
                            "--sign-threads", bad], capture_output=True, timeout=30)
        assert p.returncode == 2 and b"sign-threads" in p.stderr, (bad, p.stderr)
