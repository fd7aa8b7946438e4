"""mailrep relay's durability and limits: kill -9 while clients are
submitting, restart on the same spool, and every message that got a 250
reaches smtp-sink (at least once); a full disk (here a file-size limit)
answers 452 and corrupts nothing; a counting sink shows that the
connections to one destination never exceed --conn-limit, and that they
are reused for several messages."""
import re
import resource
import signal
import smtplib
import threading
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_util import CountingSink, events, message, sink_files, start_relay, start_sink, \
    stop_clean, submit, wait_for


def delivered_ids(sink):
    ids = set()
    for f in sink_files(sink):
        ids.update(m.decode() for m in re.findall(rb"\(mailrep\) with E?SMTP id ([0-9a-f.]+);", f))
    return ids


def test_kill_9_under_load_loses_nothing(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    args = ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1", "--retry-schedule", "1s"]
    relay = start_relay(datadir, args)
    acked, lock, stop = set(), threading.Lock(), threading.Event()

    def client(n):
        k = 0
        while not stop.is_set():
            try:
                s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
                s.ehlo("client.test")
                while not stop.is_set():
                    k += 1
                    qid = submit(relay.port, "alice@example.com",
                                 ["u%d.%d@dest.example" % (n, k)], message("m%d.%d" % (n, k)),
                                 conn=s)
                    with lock:
                        acked.add(qid)
            except Exception:
                time.sleep(0.05)  # the relay is gone: try again until told to stop

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 150, timeout=30)
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait()
    relay.log.close()
    stop.set()
    for t in threads:
        t.join()
    before = set(acked)
    assert len(before) >= 150
    relay2 = start_relay(datadir, args, spool=relay.spool, name="relay2")
    servers.append(relay2)
    got = wait_for(lambda: before <= delivered_ids(sink) and delivered_ids(sink), timeout=60,
                   step=0.2)
    missing = before - delivered_ids(sink)
    assert not missing, "%d acknowledged messages lost, e.g. %s" % (len(missing),
                                                                    sorted(missing)[:3])
    assert got
    # the accounting log shows every acknowledged message received and delivered
    ev = events(relay2)
    assert before <= {e["id"] for e in ev if e["event"] == "reception"}
    assert before <= {e["id"] for e in ev if e["event"] == "delivery"}
    stop_clean(relay2)


def test_full_disk_gives_452_and_corrupts_nothing(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    args = ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1", "--retry-schedule", "1s"]

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))

    # the sink refuses to take anything yet, so everything stays in the spool
    sink.stop()
    servers.remove(sink)
    relay = start_relay(datadir, args, preexec_fn=small_disk)
    servers.append(relay)
    big = message("big") + ("x" * 70 + "\r\n") * 400  # about 29 KB
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    s.ehlo("client.test")
    acked, refused = [], None
    for i in range(20):
        s.mail("alice@example.com")
        s.rcpt("bob%d@dest.example" % i)
        code, msg = s.data(big.encode())
        if code == 250:
            acked.append(msg.decode().split("queued as ")[1])
        else:
            refused = (code, msg)
            break
    assert refused and refused[0] == 452 and b"4.3.1" in refused[1], refused
    assert 3 <= len(acked) < 20
    # the session goes on after the 452: a small message still fits
    small = submit(relay.port, "alice@example.com", ["small@dest.example"], message("small"),
                   conn=s)
    s.quit()
    relay.stop()
    servers.remove(relay)
    # restart without the limit, with the sink back: all acknowledged mail
    # is delivered and the spool needed no repair
    sink2 = start_sink(datadir, port=sink.port)
    servers.append(sink2)
    relay2 = start_relay(datadir, args, spool=relay.spool, name="relay2")
    servers.append(relay2)
    want = set(acked) | {small}
    assert wait_for(lambda: want <= delivered_ids(sink2), timeout=30, step=0.2), \
        want - delivered_ids(sink2)
    out = relay2.output()
    assert "unreadable" not in out and "recovered" in out
    stop_clean(relay2)


def test_connection_limit_and_reuse(datadir, servers):
    sink = CountingSink()
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "3"])
        servers.append(relay)
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        s.ehlo("client.test")
        for i in range(30):
            submit(relay.port, "alice@example.com", ["u%d@dest.example" % i], conn=s)
        s.quit()
        assert wait_for(lambda: sink.messages >= 30, timeout=30)
        assert len([e for e in events(relay) if e["event"] == "delivery"]) == 30
        assert sink.max <= 3, sink.max
        assert sink.max >= 2, sink.max  # deliveries really run in parallel
        assert sink.connections < 30  # connections carry several messages
        assert sink.pipelined >= 25  # the sink offers PIPELINING: MAIL, RCPT, DATA in one go
        stop_clean(relay)
    finally:
        sink.stop()


def test_group_commit_shares_syncs(datadir, servers):
    """Concurrent sessions share fsyncs: fewer syncs than acknowledged messages."""
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1"])
    servers.append(relay)
    acked = []

    def client(n):
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        s.ehlo("client.test")
        for k in range(25):
            acked.append(submit(relay.port, "alice@example.com", ["u%d.%d@dest.example" % (n, k)],
                                conn=s))
        s.quit()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) == 200
    stop_clean(relay)
    m = re.search(r"group commit: (\d+) messages acknowledged in (\d+) syncs", relay.output())
    assert m, relay.output()
    messages, syncs = int(m.group(1)), int(m.group(2))
    assert messages == 200
    print("group commit: %d messages in %d syncs" % (messages, syncs))
    assert syncs < messages, (messages, syncs)  # one sync per message would fail


def test_restarts_keep_the_queue(datadir, servers):
    """A clean stop keeps queued mail: three starts in a row on one spool,
    with the next hop down, still hold every message; `mailrep queue` sees
    them without changing the spool, and they are delivered once the next
    hop is back."""
    import json
    import subprocess
    from conftest import MAILREP, free_port
    hop_port = free_port()
    args = ["--route", "*=127.0.0.1:%d" % hop_port, "--trusted", "127.0.0.1",
            "--retry-schedule", "1s"]
    relay = start_relay(datadir, args)
    ids = {submit(relay.port, "alice@example.com", ["u%d@dest.example" % i, "v@other.example"])
           for i in range(3)}
    assert wait_for(lambda: len([e for e in events(relay) if e["event"] == "transient"]) >= 6)
    stop_clean(relay)
    for n in range(2):
        relay = start_relay(datadir, args, spool=relay.spool, name="again%d" % n)
        assert "3 messages recovered" in wait_for(relay.output), relay.output()
        stop_clean(relay)
        q = subprocess.run([MAILREP, "queue", "--spool", relay.spool, "--json", "--list"],
                           capture_output=True, timeout=30)
        assert q.returncode == 0, q.stderr
        doc = json.loads(q.stdout)
        assert {m["id"] for m in doc["messages"]} == ids
        assert doc["total"]["recipients"] == 6
        assert {d["domain"]: d["recipients"] for d in doc["domains"]} == {
            "dest.example": 3, "other.example": 3}
        assert all(r["attempts"] >= 1 for m in doc["messages"] for r in m["rcpts"])
    sink = start_sink(datadir, port=hop_port)
    servers.append(sink)
    relay = start_relay(datadir, args, spool=relay.spool, name="last")
    servers.append(relay)
    assert wait_for(lambda: ids <= delivered_ids(sink), timeout=30)
    stop_clean(relay)
    q = subprocess.run([MAILREP, "queue", "--spool", relay.spool], capture_output=True,
                       timeout=30)
    assert q.stdout.startswith(b"0 messages, 0 recipients pending"), q.stdout
