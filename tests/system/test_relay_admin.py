"""mailrep relay's administration over its control socket (SPOOL/control),
with smtp-sink on loopback as the receiver: the summary by domain and site
matches the offline scan; a suspended domain gets nothing while others
flow, and gets its mail once resumed; suspensions survive a restart and a
timed one ends by itself; bouncing a message sends one DSN to its sender and
writes `admin` and `bounce` events; the same by account (AUTH identity); retry-now delivers at once what a long
retry schedule would have held back; the socket is 0600 and refuses
malformed and over-long requests; `mailrep queue` still reads the spool
when the relay is not running."""
import json
import os
import socket
import stat
import subprocess
import time

from conftest import MAILREP, datadir, free_port, servers  # noqa: F401 (fixtures)
from relay_util import (events, message, sink_files, start_relay, start_sink, stop_clean,
                        submit, wait_for)


def queue(spool, *words, json_out=True, check=True):
    argv = [MAILREP, "queue", "--spool", spool] + (["--json"] if json_out else []) + list(words)
    q = subprocess.run(argv, capture_output=True, timeout=60)
    if check:
        assert q.returncode == 0, (argv, q.stdout, q.stderr)
    if json_out and q.returncode == 0:
        return json.loads(q.stdout)
    return q


def of(relay, kind, **match):
    return [e for e in events(relay) if e["event"] == kind and
            all(e.get(k) == v for k, v in match.items())]


def rcpts_of(files):
    out = []
    for f in files:
        for line in f.split(b"\n"):
            if line.startswith(b"X-Rcpt-Args: <"):
                out.append(line.split(b"<")[1].split(b">")[0].decode())
    return out


def ask(spool, raw, shut=True):
    """Sends raw bytes to the control socket, returns the reply as text."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(os.path.join(spool, "control"))
    try:
        s.sendall(raw)
    except OSError:
        pass  # the relay may refuse and close before reading everything
    if shut:
        s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode()


def test_summary_by_domain_and_site_matches_offline(datadir, servers):
    closed1, closed2 = free_port(), free_port()
    relay = start_relay(datadir, ["--route", "dest.example=127.0.0.1:%d" % closed1,
                                  "--route", "*=127.0.0.1:%d" % closed2,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h"])
    servers.append(relay)
    ids = [submit(relay.port, "alice@example.com", ["a%d@dest.example" % i, "b@other.example"])
           for i in range(3)]
    ids.append(submit(relay.port, "alice@example.com", ["c@third.example"]))
    assert wait_for(lambda: len(of(relay, "transient")) >= 7)
    live = queue(relay.spool)
    assert live["ok"] and live["source"] == "relay"
    assert live["total"] == {"messages": 4, "recipients": 7, "oldest": live["total"]["oldest"]}
    doms = {d["domain"]: (d["messages"], d["recipients"], d["deferred"]) for d in live["domains"]}
    assert doms == {"dest.example": (3, 3, 3), "other.example": (3, 3, 3),
                    "third.example": (1, 1, 1)}
    sites = {s["site"]: (s["messages"], s["recipients"]) for s in live["sites"]}
    assert sites == {"127.0.0.1:%d" % closed1: (3, 3), "127.0.0.1:%d" % closed2: (4, 4)}
    assert [(p["pool"], p["recipients"]) for p in live["pools"]] == [(None, 7)]
    assert [(a["account"], a["messages"]) for a in live["accounts"]] == [(None, 4)]
    assert live["suspended"] == []
    listed = queue(relay.spool, "--list")
    assert sorted(m["id"] for m in listed["messages"]) == sorted(ids)
    assert queue(relay.spool, "list", "2")["truncated"] is True
    # a list is built in the relay's loop at once: it is bounded
    q = queue(relay.spool, "list", "10001", check=False)
    assert q.returncode != 0 and b"bad LIMIT '10001' (1 to 10000)" in q.stderr, q.stderr
    text = queue(relay.spool, json_out=False).stdout.decode()
    assert text.startswith("4 messages, 7 recipients pending") and "by site:" in text, text
    stop_clean(relay)
    assert not os.path.exists(os.path.join(relay.spool, "control"))
    offline = queue(relay.spool)
    assert "source" not in offline and offline["total"]["recipients"] == 7
    assert {d["domain"]: (d["recipients"], d["deferred"]) for d in offline["domains"]} == {
        k: v[1:] for k, v in doms.items()}


def test_suspend_domain_then_resume(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1s"])
    servers.append(relay)
    r = queue(relay.spool, "suspend", "domain", "Dest.Example")
    assert r["ok"] and "dest.example suspended until resumed" in r["message"]
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example", "carol@other.example"])
    qid2 = submit(relay.port, "alice@example.com", ["dave@dest.example"])
    # the other domain flows...
    assert wait_for(lambda: of(relay, "delivery", rcpt="carol@other.example"))
    time.sleep(2.5)  # ...and two scheduler ticks later nothing was tried for the held one
    assert rcpts_of(sink_files(sink)) == ["carol@other.example"]
    assert of(relay, "transient") == [] and not of(relay, "delivery", rcpt="bob@dest.example")
    live = queue(relay.spool)
    assert [(d["domain"], d["recipients"], d["deferred"]) for d in live["domains"]] == [
        ("dest.example", 2, 0)]
    assert live["suspended"] == [{"kind": "domain", "name": "dest.example", "until": None}]
    r = queue(relay.spool, "resume", "domain", "dest.example")
    assert r["ok"]
    assert wait_for(lambda: len(of(relay, "delivery")) == 3)
    d = {e["rcpt"]: e for e in of(relay, "delivery")}
    assert d["bob@dest.example"]["id"] == qid and d["dave@dest.example"]["id"] == qid2
    assert d["bob@dest.example"]["attempts"] == 1  # holding counted no attempt
    admin = of(relay, "admin")
    assert [(e["action"], e["kind"], e["name"]) for e in admin] == [
        ("suspend", "domain", "dest.example"), ("resume", "domain", "dest.example")]
    # resuming what is not suspended is refused, with a reason
    q = queue(relay.spool, "resume", "domain", "dest.example", check=False)
    assert q.returncode != 0 and b"not suspended" in q.stderr
    stop_clean(relay)


def test_suspension_survives_restart_and_a_timed_one_ends(datadir, servers, monkeypatch):
    clock = os.path.join(datadir, "clock")
    with open(clock, "w") as f:
        f.write("2026-01-01T00:00:00Z\n")
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    sink = start_sink(datadir)
    servers.append(sink)
    args = ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1", "--retry-schedule", "1s"]
    relay = start_relay(datadir, args)
    assert queue(relay.spool, "suspend", "domain", "dest.example")["ok"]
    assert queue(relay.spool, "suspend", "site", sink.hop, "1h")["ok"]
    stop_clean(relay)
    with open(os.path.join(relay.spool, "suspended")) as f:
        saved = f.read()
    assert saved == ("suspend domain dest.example\nsuspend site %s @%d\n"
                     % (sink.hop, 1767225600 + 3600)), saved
    relay = start_relay(datadir, args, spool=relay.spool, name="again")
    servers.append(relay)
    live = queue(relay.spool)
    assert {(s["kind"], s["name"], s["until"]) for s in live["suspended"]} == {
        ("domain", "dest.example", None), ("site", sink.hop, "2026-01-01T01:00:00Z")}
    submit(relay.port, "alice@example.com", ["bob@dest.example"])
    submit(relay.port, "alice@example.com", ["carol@other.example"])
    time.sleep(2.5)
    assert sink_files(sink) == [] and of(relay, "transient") == []
    # the site's hour passes: other.example flows, dest.example stays held
    with open(clock, "w") as f:
        f.write("2026-01-01T01:00:01Z\n")
    assert wait_for(lambda: of(relay, "delivery"))
    time.sleep(2)
    assert rcpts_of(sink_files(sink)) == ["carol@other.example"]
    assert queue(relay.spool, "resume", "domain", "dest.example")["ok"]
    assert wait_for(lambda: len(of(relay, "delivery")) == 2)
    stop_clean(relay)
    with open(os.path.join(relay.spool, "suspended")) as f:
        assert f.read() == ""


def test_bounce_by_id_sends_dsn(datadir, servers):
    dsns = start_sink(datadir)
    servers.append(dsns)
    closed = free_port()
    csvpath = os.path.join(datadir, "acct.csv")
    relay = start_relay(datadir, ["--route", "dest.example=127.0.0.1:%d" % closed,
                                  "--route", "example.com=" + dsns.hop,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h",
                                  "--csv", csvpath])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example", "eve@dest.example"],
                 message("to-bounce"))
    keep = submit(relay.port, "alice@example.com", ["carl@dest.example"], message("kept"))
    assert wait_for(lambda: len(of(relay, "transient")) >= 3)
    r = queue(relay.spool, "bounce", "id", qid)
    assert r["ok"] and r["messages"] == 1 and r["recipients"] == 2
    assert wait_for(lambda: sink_files(dsns))
    time.sleep(1.0)  # a second DSN would have come by now
    files = sink_files(dsns)
    assert len(files) == 1  # one DSN for the message, listing both recipients
    f = files[0]
    assert b"X-Mail-Args: <>" in f and b"X-Rcpt-Args: <alice@example.com>" in f
    assert ("X-Mailrep-Queue-ID: %s" % qid).encode() in f
    assert b"Subject: to-bounce" in f and f.count(b"Status: 5.0.0") == 2
    assert b"Final-Recipient: rfc822; bob@dest.example" in f
    assert b"Final-Recipient: rfc822; eve@dest.example" in f
    b = of(relay, "bounce")
    assert sorted(e["rcpt"] for e in b) == ["bob@dest.example", "eve@dest.example"]
    assert all(e["category"] == "admin" and e["id"] == qid for e in b)
    a = of(relay, "admin")
    assert [(e["action"], e["kind"], e["name"], e["messages"], e["recipients"]) for e in a] == [
        ("bounce", "id", qid, 1, 2)]
    live = queue(relay.spool)
    assert live["total"]["messages"] == 1
    assert [m["id"] for m in queue(relay.spool, "--list")["messages"]] == [keep]
    q = queue(relay.spool, "bounce", "id", "nope.1.2", check=False)
    assert q.returncode != 0 and b"no queued message nope.1.2" in q.stderr
    stop_clean(relay)
    # the bounce is final: it is not back after a restart
    offline = queue(relay.spool)
    assert offline["total"]["messages"] == 1
    with open(csvpath) as f:
        rows = f.read().splitlines()
    assert any(r.startswith("a,") and ",bounce," in r and qid in r for r in rows), rows
    assert sum(1 for r in rows if r.startswith("b,") and ",admin," in r) == 2, rows


def test_retry_now(datadir, servers):
    grey = start_sink(datadir, ["-r", "RCPT"])
    servers.append(grey)
    relay = start_relay(datadir, ["--route", "*=" + grey.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1h"])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example"])
    other = submit(relay.port, "alice@example.com", ["carol@other.example"])
    assert wait_for(lambda: len(of(relay, "transient")) == 2)
    # the transient is logged before the relay's RSET: smtp-sink creates a
    # dump file at MAIL and removes it at RSET, and the next sink shares the
    # dump directory, so stop this one only once its RSETs are through
    assert wait_for(lambda: sink_files(grey) == [])
    grey.stop()
    servers.remove(grey)
    ok = start_sink(datadir, port=grey.port)
    servers.append(ok)
    time.sleep(2)
    assert sink_files(ok) == []  # an hour to wait
    r = queue(relay.spool, "retry", "id", qid)
    assert r["ok"] and r["recipients"] == 1
    d = wait_for(lambda: of(relay, "delivery"))
    assert d and d[0]["id"] == qid and d[0]["attempts"] == 2
    time.sleep(1.5)
    assert len(of(relay, "delivery")) == 1  # only what was asked for
    assert queue(relay.spool, "retry", "domain", "other.example")["recipients"] == 1
    assert wait_for(lambda: len(of(relay, "delivery")) == 2)
    assert of(relay, "delivery")[1]["id"] == other
    r = queue(relay.spool, "retry", "all")
    assert r["ok"] and r["recipients"] == 0
    assert [(e["action"], e["kind"]) for e in of(relay, "admin")] == [
        ("retry", "id"), ("retry", "domain"), ("retry", "all")]
    stop_clean(relay)


def test_control_socket_mode_and_refusals(datadir, servers):
    relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % free_port(),
                                  "--trusted", "127.0.0.1"])
    servers.append(relay)
    path = os.path.join(relay.spool, "control")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    r = json.loads(ask(relay.spool, b"frobnicate now\n"))
    assert r["ok"] is False and "unknown command 'frobnicate'" in r["error"]
    r = json.loads(ask(relay.spool, b"suspend domain\n"))
    assert r["ok"] is False and "NAME is missing" in r["error"]
    r = json.loads(ask(relay.spool, b"retry \x00all\n"))
    assert r["ok"] is False and "not printable" in r["error"]
    r = json.loads(ask(relay.spool, b"retry domain " + b"x" * 5000 + b"\n", shut=False))
    assert r["ok"] is False and "longer than 1024 bytes" in r["error"]
    r = json.loads(ask(relay.spool, b"summary"))
    assert r["ok"] is False and "not ended by a newline" in r["error"]
    q = queue(relay.spool, "suspend", "id", "x", check=False)
    assert q.returncode != 0 and b"kind must be domain, site, pool or account" in q.stderr
    # still serving, and no admin event for refused requests
    assert json.loads(ask(relay.spool, b"summary\r\n"))["ok"] is True
    assert of(relay, "admin") == []
    # a second relay on the same spool is refused
    other = subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:%d" % free_port(),
                            "--spool", relay.spool, "--trusted", "127.0.0.1"],
                           capture_output=True, timeout=30)
    assert other.returncode != 0 and b"another relay is running" in other.stderr
    # a client still connected (half a request) when the relay stops is closed cleanly
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(path)
    idle.sendall(b"summ")
    time.sleep(0.3)
    stop_clean(relay)
    idle.close()
    assert not os.path.exists(path)


def test_queue_offline_and_stale_socket(datadir, servers):
    closed = free_port()
    args = ["--route", "*=127.0.0.1:%d" % closed, "--trusted", "127.0.0.1",
            "--retry-schedule", "1h"]
    relay = start_relay(datadir, args)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example"])
    assert wait_for(lambda: of(relay, "transient"))
    relay.proc.kill()  # a crash leaves the socket behind
    relay.proc.wait()
    relay.log.close()
    assert os.path.exists(os.path.join(relay.spool, "control"))
    offline = queue(relay.spool, "--list")
    assert "source" not in offline and [m["id"] for m in offline["messages"]] == [qid]
    text = queue(relay.spool, json_out=False).stdout.decode()
    assert text.startswith("1 messages, 1 recipients pending"), text
    q = queue(relay.spool, "retry", "all", check=False)
    assert q.returncode != 0 and b"no relay is running" in q.stderr
    relay = start_relay(datadir, args, spool=relay.spool, name="again")
    servers.append(relay)
    assert queue(relay.spool)["source"] == "relay"
    assert queue(relay.spool, "--offline")["total"]["messages"] == 1
    stop_clean(relay)


def test_suspend_pool_and_summary_by_pool(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1s", "--pool", "bulk=127.0.0.1",
                                  "--pool", "tx=127.0.0.1", "--default-pool", "tx"])
    servers.append(relay)
    assert queue(relay.spool, "suspend", "pool", "bulk", "1d")["ok"]

    def with_pool(pool, tag):
        return "X-Mailrep-Pool: %s\r\n" % pool + message(tag)

    b = submit(relay.port, "alice@example.com", ["bob@dest.example"], with_pool("bulk", "b"))
    t = submit(relay.port, "alice@example.com", ["bob@dest.example"], with_pool("tx", "t"))
    d = wait_for(lambda: of(relay, "delivery"))
    assert d and d[0]["id"] == t and d[0]["pool"] == "tx"
    live = queue(relay.spool)
    assert [(p["pool"], p["messages"]) for p in live["pools"]] == [("bulk", 1)]
    assert live["suspended"][0]["kind"] == "pool" and live["suspended"][0]["name"] == "bulk"
    time.sleep(2)
    assert len(of(relay, "delivery")) == 1 and of(relay, "transient") == []
    assert queue(relay.spool, "resume", "pool", "bulk")["ok"]
    d = wait_for(lambda: len(of(relay, "delivery")) == 2 and of(relay, "delivery"))
    assert d and d[1]["id"] == b and d[1]["pool"] == "bulk" and d[1]["attempts"] == 1
    stop_clean(relay)


def test_suspend_and_bounce_by_account(datadir, servers):
    from relay_tls_util import swaks, write_config
    sink = start_sink(datadir)
    servers.append(sink)
    cfg = write_config(datadir, {"acme": {"password": "acme-pw"}, "zeta": {"password": "zeta-pw"}},
                       relay=[("auth-without-tls", "yes")])
    args = ["-c", cfg, "--route", "*=" + sink.hop, "--retry-schedule", "1s"]
    relay = start_relay(datadir, args)
    spool = relay.spool

    def send(user, rcpt):
        code, out = swaks(relay.port, "--auth", "PLAIN", "--auth-user", user,
                          "--auth-password", user + "-pw", rcpt=rcpt)
        assert code == 0, out

    r = queue(spool, "suspend", "account", "acme")
    assert r["ok"] and "account acme suspended until resumed" in r["message"]
    send("acme", "bob@dest.example")
    send("zeta", "carol@dest.example")
    assert wait_for(lambda: of(relay, "delivery", rcpt="carol@dest.example"))
    time.sleep(2.5)  # two scheduler ticks: nothing tried for acme's mail
    assert rcpts_of(sink_files(sink)) == ["carol@dest.example"]
    assert of(relay, "transient") == []
    live = queue(spool)
    assert [(a["account"], a["recipients"]) for a in live["accounts"]] == [("acme", 1)]
    assert live["suspended"] == [{"kind": "account", "name": "acme", "until": None}]
    # kept across a restart, like the other suspensions
    stop_clean(relay)
    with open(os.path.join(spool, "suspended")) as f:
        assert f.read() == "suspend account acme\n"
    relay = start_relay(datadir, args, spool=spool, name="again")
    servers.append(relay)
    time.sleep(2.5)
    assert rcpts_of(sink_files(sink)) == ["carol@dest.example"]
    assert queue(spool)["suspended"][0]["name"] == "acme"
    r = queue(spool, "resume", "account", "acme")
    assert r["ok"]
    d = wait_for(lambda: of(relay, "delivery", rcpt="bob@dest.example"))
    assert d and d[0]["account"] == "acme" and d[0]["attempts"] == 1  # no attempt counted

    # bounce by account: every pending recipient of zeta's mail, one DSN per message
    assert queue(spool, "suspend", "account", "zeta", "1h")["ok"]
    send("zeta", "dave@dest.example,erin@other.example")
    send("zeta", "fred@dest.example")
    send("acme", "gina@dest.example")
    assert wait_for(lambda: of(relay, "delivery", rcpt="gina@dest.example"))
    assert wait_for(lambda: queue(spool)["total"]["recipients"] == 3)
    r = queue(spool, "bounce", "account", "zeta")
    assert r["ok"] and r["messages"] == 2 and r["recipients"] == 3, r
    b = of(relay, "bounce")
    assert sorted(e["rcpt"] for e in b) == ["dave@dest.example", "erin@other.example",
                                            "fred@dest.example"]
    assert all(e["category"] == "admin" and e["account"] == "zeta" for e in b)
    assert wait_for(lambda: len([f for f in sink_files(sink) if b"X-Mail-Args: <>" in f]) == 2)
    time.sleep(1.0)
    dsns = [f for f in sink_files(sink) if b"X-Mail-Args: <>" in f]
    assert len(dsns) == 2
    assert sorted(f.count(b"Final-Recipient:") for f in dsns) == [1, 2]
    assert queue(spool)["total"]["messages"] == 0
    a = of(relay, "admin")
    assert [(e["action"], e["kind"], e["name"]) for e in a] == [
        ("suspend", "account", "acme"),  # the log goes on across the restart
        ("resume", "account", "acme"), ("suspend", "account", "zeta"),
        ("bounce", "account", "zeta")]
    assert a[-1]["messages"] == 2 and a[-1]["recipients"] == 3
    q = queue(spool, "bounce", "account", "nobody")
    assert q["ok"] and q["recipients"] == 0
    stop_clean(relay)


def test_summary_counters_through_the_life_of_the_queue(datadir, servers, monkeypatch):
    """The summary comes from counters kept as mail comes and goes; the test
    relays (MAILREP_QUEUE_VERIFY) also make it by walking the queue and
    refuse to answer when the two differ, and check the counters at every
    scheduler tick. Here every kind of change goes by: receptions (several
    domains in one message, two domains of one site, a domain in two
    spellings, a pool), deliveries, deferrals, 5xx bounces, an
    administrator's suspend, retry and bounce, expiry, and a restart."""
    clock = os.path.join(datadir, "clock")

    def at(t):
        with open(clock, "w") as f:
            f.write(t + "\n")

    at("2026-01-01T00:00:00Z")
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    ok, grey, hard = start_sink(datadir), start_sink(datadir, ["-r", "RCPT"]), \
        start_sink(datadir, ["-f", "RCPT"])
    servers.extend([ok, grey, hard])
    closed = free_port()
    args = ["--route", "deliver.example=" + ok.hop, "--route", "defer.example=" + grey.hop,
            "--route", "x.example=" + grey.hop, "--route", "y.example=" + grey.hop,
            "--route", "bounce.example=" + hard.hop, "--route", "*=127.0.0.1:%d" % closed,
            "--trusted", "127.0.0.1", "--retry-schedule", "1s", "--max-age", "1h",
            "--pool", "bulk=127.0.0.1"]
    relay = start_relay(datadir, args)
    spool = relay.spool

    def summary():
        s = queue(spool)  # ok only if the counters agree with the walk
        assert s.get("source") == "relay", relay.output()  # not aborted by a tick's check
        return s, {d["domain"]: (d["messages"], d["recipients"], d["deferred"])
                   for d in s["domains"]}, \
            {x["site"]: (x["messages"], x["recipients"]) for x in s["sites"]}

    m1 = submit(relay.port, "alice@example.com",
                ["a@deliver.example", "b@defer.example", "c@bounce.example"])
    m2 = submit(relay.port, "alice@example.com", ["d@defer.example", "e@Defer.EXAMPLE"])
    m3 = submit(relay.port, "alice@example.com", ["f@nowhere.example"])
    submit(relay.port, "alice@example.com", ["g@deliver.example"])
    m5 = submit(relay.port, "alice@example.com", ["h@x.example", "i@y.example"],
                "X-Mailrep-Pool: bulk\r\n" + message("m5"))
    assert wait_for(lambda: len(of(relay, "delivery")) == 2)
    assert wait_for(lambda: len(of(relay, "bounce")) == 1)
    # six deferred, and the DSN of c's bounce to alice (the closed port)
    assert wait_for(lambda: len(of(relay, "transient")) == 7)
    s, doms, sites = summary()
    # one message in two domains of one site counts once for the site
    assert sites[grey.hop] == (3, 5), sites
    assert doms["defer.example"] == (2, 3, 3) and doms["x.example"] == (1, 1, 1), doms
    assert doms["nowhere.example"] == (1, 1, 1) and doms["example.com"] == (1, 1, 1)
    assert "deliver.example" not in doms and "bounce.example" not in doms
    assert {p["pool"]: p["messages"] for p in s["pools"]} == {"bulk": 1, None: 4}, s["pools"]
    assert s["total"]["messages"] == 5 and s["total"]["recipients"] == 7, s["total"]
    assert s["total"]["oldest"] == "2026-01-01T00:00:00Z"

    # an administrator: a suspension, a retry, a bounce (and its DSN)
    assert queue(spool, "suspend", "domain", "x.example")["ok"]
    r = queue(spool, "retry", "domain", "defer.example")
    assert r["recipients"] + r["busy"] == 3, r
    again = {"b@defer.example", "d@defer.example", "e@Defer.EXAMPLE"}
    assert wait_for(lambda: {e["rcpt"] for e in of(relay, "transient", attempts=2)} == again)
    r = queue(spool, "bounce", "id", m3)
    assert r["ok"] and r["recipients"] == 1
    # m2's two deferred recipients leave a domain where m1's stays
    r = queue(spool, "bounce", "id", m2)
    assert r["ok"] and r["recipients"] == 2
    s, doms, sites = summary()
    assert "nowhere.example" not in doms and doms["x.example"] == (1, 1, 1), doms
    assert doms["defer.example"] == (1, 1, 1), doms
    assert s["total"]["messages"] == 5, s["total"]  # m2 and m3 left, their DSNs came
    assert queue(spool, "resume", "domain", "x.example")["ok"]

    # an hour later every deferred recipient expires at its next attempt
    at("2026-01-01T01:00:05Z")
    # (b, h, i, and the three DSNs, which get none of their own)
    assert wait_for(lambda: len(of(relay, "expiry")) == 6), of(relay, "expiry")
    assert {m1, m5} < {e["id"] for e in of(relay, "expiry")}
    s, doms, sites = summary()
    # only the expiry DSNs to alice are left, one per message
    assert doms == {"example.com": (2, 2, s["domains"][0]["deferred"])}, doms
    assert grey.hop not in sites
    before = s["total"]

    # recovery rebuilds the same counters
    stop_clean(relay)
    relay = start_relay(datadir, args, spool=spool, name="again")
    servers.append(relay)
    s, doms, sites = summary()
    assert s["total"] == before and set(doms) == {"example.com"}
    assert queue(spool, "bounce", "domain", "example.com")["ok"]
    assert wait_for(lambda: queue(spool)["total"]["messages"] == 0)
    s, doms, sites = summary()
    assert s["total"] == {"messages": 0, "recipients": 0, "oldest": None}
    assert doms == {} and sites == {} and s["pools"] == [] and s["accounts"] == []
    stop_clean(relay)


def test_list_is_bounded_by_recipients_too(datadir, servers):
    relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % free_port(),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h",
                                  "--max-rcpts", "1000"])
    servers.append(relay)
    ids = [submit(relay.port, "alice@example.com",
                  ["r%d@dest%d.example" % (i, i % 7) for i in range(1000)]) for _ in range(11)]
    listed = queue(relay.spool, "list", "20")
    # ten messages hold the 10,000 recipients a reply may hold: the newest ten
    assert listed["truncated"] is True
    assert [m["id"] for m in listed["messages"]] == ids[::-1][:10]
    assert sum(len(m["rcpts"]) for m in listed["messages"]) == 10000
    total = queue(relay.spool)["total"]
    assert (total["messages"], total["recipients"]) == (11, 11000)
    stop_clean(relay)


def test_list_pages_through_every_message_once(datadir, servers):
    """A queue longer than a page (the default, 1,000 messages) is listed
    whole by following each reply's cursor; pages are newest first, and a
    cursor stays good when the message it names leaves the queue and new
    mail comes in meanwhile (new mail is newer than the first page: not in
    the pages that follow). bounce id and retry id find a message among
    them by its id."""
    import smtplib
    relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % free_port(),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h"])
    servers.append(relay)
    conn = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    conn.ehlo("client.test")
    ids = [submit(relay.port, "", ["r%d@dest.example" % i], conn=conn) for i in range(1050)]
    conn.quit()
    first = queue(relay.spool, "--list")
    assert first["truncated"] is True and len(first["messages"]) == 1000
    assert [m["id"] for m in first["messages"]] == ids[::-1][:1000]
    rest = queue(relay.spool, "--list", "--after", str(first["next"]))
    assert [m["id"] for m in rest["messages"]] == ids[::-1][1000:]
    assert rest["truncated"] is False and rest["next"] is None
    text = queue(relay.spool, "--list", "--limit", "3", json_out=False).stdout.decode()
    assert "(more: 3 shown; the next ones with --after " in text, text

    # pages of 100, and between two pages the cursor's message is bounced
    # (its DSN to the null sender is dropped) and a new message comes
    seen, cursor, pages, bounced, new = [], None, 0, [], []
    while True:
        words = ["list", "100"] + (["after", str(cursor)] if cursor else [])
        page = queue(relay.spool, *words)
        got = [m["id"] for m in page["messages"]]
        seen.extend(got)
        pages += 1
        if not page["truncated"]:
            assert page["next"] is None
            break
        cursor = page["next"]
        r = queue(relay.spool, "bounce", "id", got[-1])
        assert r["ok"] and r["messages"] == 1 and r["recipients"] == 1, r
        bounced.append(got[-1])
        new.append(submit(relay.port, "", ["late@dest.example"]))
    assert pages == 11 and len(seen) == len(set(seen)) == 1050
    assert set(seen) == set(ids)
    assert not set(new) & set(seen)
    # the bounced ones are gone; retry id finds one among the rest
    left = queue(relay.spool, "list", "10000")
    assert {m["id"] for m in left["messages"]} == (set(ids) - set(bounced)) | set(new)
    r = queue(relay.spool, "retry", "id", ids[500])
    assert r["ok"] and r["messages"] == 1 and r["recipients"] == 1, r
    q = queue(relay.spool, "retry", "id", bounced[0], check=False)
    assert q.returncode != 0 and ("no queued message %s" % bounced[0]).encode() in q.stderr
    # a cursor past the oldest lists nothing more; refusals name what is wrong
    assert queue(relay.spool, "list", "after", "1")["messages"] == []
    q = queue(relay.spool, "list", "after", "99999999", check=False)
    assert q.returncode != 0 and b"not a cursor of this relay" in q.stderr, q.stderr
    q = queue(relay.spool, "--list", "--after", "soon", check=False)
    assert q.returncode != 0 and b"bad CURSOR 'soon'" in q.stderr, q.stderr
    q = queue(relay.spool, "--offline", "--list", "--after", "5", check=False)
    assert q.returncode != 0 and b"--after needs the relay running" in q.stderr, q.stderr
    stop_clean(relay)


def test_resume_releases_what_the_hold_held(datadir, servers):
    """Three holds, all until resumed: a domain each for a.example and
    b.example, and the site every domain goes to. Ending the site's hold
    lets c.example's mail go, while a.example's and b.example's stay held
    by their domain's hold; ending a.example's lets a.example's go and not
    b.example's. A hold suspended again with an end holds its mail to that
    end. The test relays check at every tick that the holds' lists of the
    messages they hold agree with the messages (MAILREP_QUEUE_VERIFY)."""
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1s"])
    servers.append(relay)
    for words in (("domain", "a.example"), ("domain", "b.example"), ("site", sink.hop)):
        assert queue(relay.spool, "suspend", *words)["ok"]
    m1 = submit(relay.port, "alice@example.com", ["x@a.example"])
    submit(relay.port, "alice@example.com", ["y@b.example"])
    submit(relay.port, "alice@example.com", ["z@c.example", "w@a.example"])
    time.sleep(2.5)  # two ticks: everything held, nothing tried
    # a retry makes held mail due, and it is held again, not tried
    assert queue(relay.spool, "retry", "id", m1)["recipients"] == 1
    time.sleep(1.5)
    assert sink_files(sink) == [] and of(relay, "transient") == []
    assert queue(relay.spool, "resume", "site", sink.hop)["ok"]
    assert wait_for(lambda: of(relay, "delivery"))
    time.sleep(2.5)
    assert [e["rcpt"] for e in of(relay, "delivery")] == ["z@c.example"]
    assert queue(relay.spool, "resume", "domain", "a.example")["ok"]
    assert wait_for(lambda: len(of(relay, "delivery")) == 3)
    time.sleep(2.5)
    assert sorted(e["rcpt"] for e in of(relay, "delivery")) == [
        "w@a.example", "x@a.example", "z@c.example"]
    assert all(e["attempts"] == 1 for e in of(relay, "delivery"))
    # b.example's hold, until resumed, becomes a hold of a second
    assert queue(relay.spool, "suspend", "domain", "b.example", "1s")["ok"]
    assert wait_for(lambda: len(of(relay, "delivery")) == 4, timeout=10)
    assert of(relay, "delivery")[3]["rcpt"] == "y@b.example"
    assert [(e["action"], e["name"]) for e in of(relay, "admin")] == [
        ("suspend", "a.example"), ("suspend", "b.example"), ("suspend", sink.hop),
        ("retry", m1), ("resume", sink.hop), ("resume", "a.example"), ("suspend", "b.example")]
    stop_clean(relay)
