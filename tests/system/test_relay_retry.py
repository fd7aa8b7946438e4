"""mailrep relay's retries, bounces and backoff against smtp-sink:
a greylisting-style 4xx at RCPT is retried and delivered later; a 5xx
gives an RFC 3464 DSN from the null sender to the envelope sender (and
nothing for null-sender mail); a 4xx greeting suspends the destination,
so no new connection is tried before the suspension ends. Retry delays
are seconds here (--retry-schedule)."""
import csv
import os
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_util import stop_clean, events, message, sink_files, start_relay, start_sink, submit, wait_for


def of(relay, kind):
    return [e for e in events(relay) if e["event"] == kind]


def test_greylisted_then_delivered(datadir, servers):
    grey = start_sink(datadir, ["-r", "RCPT"])
    servers.append(grey)
    csvpath = os.path.join(datadir, "acct.csv")
    relay = start_relay(datadir, ["--route", "*=" + grey.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1s", "--csv", csvpath])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example"])
    t = wait_for(lambda: of(relay, "transient"))
    assert t and t[0]["code"] // 100 == 4 and t[0]["attempts"] == 1 and t[0]["category"]
    assert sink_files(grey) == []
    # the receiver stops greylisting (same port, no -r)
    grey.stop()
    servers.remove(grey)
    ok = start_sink(datadir, port=grey.port)
    servers.append(ok)
    d = wait_for(lambda: of(relay, "delivery"), timeout=20)
    assert d and d[0]["id"] == qid and d[0]["attempts"] >= 2
    assert len(sink_files(ok)) == 1
    stop_clean(relay)
    # the same story in the PowerMTA-style CSV
    with open(csvpath, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["type"] for r in rows][:2] == ["r", "t"] and rows[-1]["type"] == "d", rows
    t, d = rows[1], rows[-1]
    assert t["dsnAction"] == "delayed" and t["dsnStatus"].startswith("4.") and t["bounceCat"]
    assert d["dsnAction"] == "relayed" and d["rcpt"] == "bob@dest.example"
    assert d["dsnMta"] == grey.hop and d["jobId"] == qid and d["srcIp"] == "127.0.0.1"


def test_hard_failure_gives_dsn_to_sender(datadir, servers):
    bad = start_sink(datadir, ["-f", "RCPT"])
    good = start_sink(datadir)
    servers += [bad, good]
    relay = start_relay(datadir, ["--route", "dest.example=" + bad.hop,
                                  "--route", "example.com=" + good.hop,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s"])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example"], message("bounced"))
    dsn = wait_for(lambda: sink_files(good))
    assert len(dsn) == 1
    text = dsn[0]
    assert b"X-Mail-Args: <>" in text  # from the null sender
    assert b"X-Rcpt-Args: <alice@example.com>" in text
    assert b"multipart/report; report-type=delivery-status" in text
    assert b"Final-Recipient: rfc822; bob@dest.example" in text
    assert b"Action: failed" in text and b"Status: 5." in text
    assert b"Message-ID: <bounced@example.com>" in text  # the original header section
    b = of(relay, "bounce")
    assert len(b) == 1 and b[0]["id"] == qid and b[0]["code"] // 100 == 5 and b[0]["category"]
    assert of(relay, "transient") == []  # a 5xx is final at once

    # a null-sender message that bounces gets nothing back
    submit(relay.port, "", ["carol@dest.example"], message("nullsender"))
    assert wait_for(lambda: len(of(relay, "bounce")) == 2)
    time.sleep(1.0)
    assert len(sink_files(good)) == 1
    stop_clean(relay)


def count_transient(datadir, servers, suspend):
    datadir = os.path.join(datadir, "suspend-" + suspend)
    os.makedirs(datadir)
    sink = start_sink(datadir, ["-r", "CONNECT"])
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1s", "--suspend", suspend])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@dest.example"])
    assert wait_for(lambda: of(relay, "transient"))
    submit(relay.port, "alice@example.com", ["carol@dest.example"])  # arrives while suspended
    time.sleep(4.0)
    t = of(relay, "transient")
    assert all(e["code"] // 100 == 4 for e in t)
    relay.stop()
    servers.remove(relay)
    return t


def test_4xx_greeting_suspends_destination(datadir, servers):
    # suspended for 60 s: one connection, one attempt, nothing more for 4 s
    assert len(count_transient(datadir, servers, "60s")) == 1
    # the control: with a 1 s suspension the same setup tries again and again
    assert len(count_transient(datadir, servers, "1s")) >= 3


def test_expiry_gives_dsn(datadir, servers):
    grey = start_sink(datadir, ["-r", "RCPT"])
    good = start_sink(datadir)
    servers += [grey, good]
    relay = start_relay(datadir, ["--route", "dest.example=" + grey.hop,
                                  "--route", "example.com=" + good.hop,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s",
                                  "--max-age", "3s"])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example"], message("expiring"))
    x = wait_for(lambda: of(relay, "expiry"), timeout=20)
    assert x and x[0]["id"] == qid and x[0]["category"] == "expired"
    assert x[0]["attempts"] >= 2  # retried before giving up
    t = of(relay, "transient")
    assert t and all(e["time"] - x[0]["time"] <= 0 for e in t)
    # smtp-sink creates its file before the data is in it: read it once the
    # relay has logged the DSN's delivery
    assert wait_for(lambda: [e for e in of(relay, "delivery") if e["rcpt"] == "alice@example.com"])
    dsn = wait_for(lambda: sink_files(good))
    assert len(dsn) == 1 and b"X-Mail-Args: <>" in dsn[0]
    assert b"Final-Recipient: rfc822; bob@dest.example" in dsn[0]
    assert b"Status: 4." in dsn[0] and b"before it expired" in dsn[0]
    assert of(relay, "bounce") == []
    stop_clean(relay)


def test_421_in_session_suspends_destination(datadir, servers):
    from relay_util import CountingSink
    sink = CountingSink(delay=0, rcpt_reply=b"421 4.7.0 too fast, closing")
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--retry-schedule", "1s",
                                      "--suspend", "60s"])
        servers.append(relay)
        submit(relay.port, "alice@example.com", ["bob@dest.example"])
        assert wait_for(lambda: of(relay, "transient"))
        # mail that arrives during the suspension waits: no new connection,
        # no attempt, although the retry schedule says 1 s
        submit(relay.port, "alice@example.com", ["carol@dest.example"])
        time.sleep(3.0)
        t = of(relay, "transient")
        assert len(t) == 1 and t[0]["code"] == 421, t
        assert sink.connections == 1
        stop_clean(relay)
    finally:
        sink.stop()


def dsn_blocks(text):
    """The per-recipient blocks of a DSN's message/delivery-status part
    (smtp-sink's dumps end lines with LF)."""
    text = text.replace(b"\r\n", b"\n")
    part = text.split(b"Content-Type: message/delivery-status", 1)[1]
    part = part.split(b"Content-Type: text/rfc822-headers", 1)[0]
    return [b for b in part.split(b"\n\n") if b"Final-Recipient:" in b]


def test_one_dsn_per_message_listing_every_failed_recipient(datadir, servers):
    # smtp-sink -f RCPT refuses every recipient of the transaction with a 5xx
    bad = start_sink(datadir, ["-f", "RCPT"])
    good = start_sink(datadir)
    servers += [bad, good]
    relay = start_relay(datadir, ["--route", "dest.example=" + bad.hop,
                                  "--route", "other.example=" + bad.hop,
                                  "--route", "example.com=" + good.hop,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s"])
    servers.append(relay)
    rcpts = ["bob@dest.example", "carol@dest.example", "dave@dest.example",
             "erin@other.example"]
    qid = submit(relay.port, "alice@example.com", rcpts, message("several"))
    assert wait_for(lambda: len(of(relay, "bounce")) == 4)
    dsn = wait_for(lambda: sink_files(good))
    time.sleep(1.5)  # a second DSN would have come by now
    dsn = sink_files(good)
    assert len(dsn) == 1, "one DSN for the message, not one per recipient"
    text = dsn[0]
    assert b"X-Mail-Args: <>" in text and b"X-Rcpt-Args: <alice@example.com>" in text
    assert b"X-Mailrep-Queue-ID: " + qid.encode() in text
    blocks = dsn_blocks(text)
    assert [b.split(b"Final-Recipient: rfc822; ")[1].split(b"\n")[0] for b in blocks] == \
        [r.encode() for r in rcpts]
    for b in blocks:
        assert b"Action: failed" in b and b"Status: 5." in b and b"Diagnostic-Code: smtp; 5" in b
    assert b"could not be delivered to these 4 recipients" in text
    assert b"Message-ID: <several@example.com>" in text
    # one reception event for the one DSN
    assert len([e for e in of(relay, "reception") if e["sender"] == ""]) == 1
    stop_clean(relay)


def test_failures_at_different_times_get_a_dsn_each(datadir, servers):
    """One domain refuses at once (5xx), the other defers until the message
    expires: the first attempt cycle ends with the 5xx reported alone, and
    the expiry later gets a DSN of its own (as documented in RELAY.md)."""
    bad = start_sink(datadir, ["-f", "RCPT"])
    grey = start_sink(datadir, ["-r", "RCPT"])
    good = start_sink(datadir)
    servers += [bad, grey, good]
    relay = start_relay(datadir, ["--route", "dest.example=" + bad.hop,
                                  "--route", "grey.example=" + grey.hop,
                                  "--route", "example.com=" + good.hop,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s",
                                  "--max-age", "4s"])
    servers.append(relay)
    submit(relay.port, "alice@example.com",
           ["bob@dest.example", "carol@grey.example", "dan@dest.example"], message("split"))
    first = wait_for(lambda: sink_files(good))
    assert len(first) == 1
    blocks = dsn_blocks(first[0])
    assert len(blocks) == 2 and all(b"@dest.example" in b and b"Status: 5." in b for b in blocks)
    assert b"carol@grey.example" not in first[0]
    assert wait_for(lambda: of(relay, "expiry"), timeout=20)
    both = wait_for(lambda: len(sink_files(good)) == 2 and sink_files(good))
    second = [t for t in both if b"carol@grey.example" in t]
    assert len(second) == 1
    blocks = dsn_blocks(second[0])
    assert len(blocks) == 1 and b"Status: 4." in blocks[0] and b"before it expired" in second[0]
    assert b"dest.example" not in blocks[0]
    time.sleep(1.0)
    assert len(sink_files(good)) == 2
    stop_clean(relay)


def test_dsn_held_for_a_busy_recipient_survives_kill_9(datadir, servers):
    """bob's 5xx comes while carol's transaction (to a receiver that takes
    30 s to answer the final dot) is still under way: the DSN waits for it.
    A kill -9 in that window loses nothing: bob is still pending in the
    spool, so after the restart he is tried again, bounces again, and his
    DSN goes out (at least once)."""
    import signal
    from relay_util import CountingSink
    bad = start_sink(datadir, ["-f", "RCPT"])
    good = start_sink(datadir)
    servers += [bad, good]
    slow = CountingSink(delay=30)
    try:
        args = ["--route", "dest.example=" + bad.hop,
                "--route", "slow.example=127.0.0.1:%d" % slow.port,
                "--route", "example.com=" + good.hop,
                "--trusted", "127.0.0.1", "--retry-schedule", "1s"]
        relay = start_relay(datadir, args)
        servers.append(relay)
        submit(relay.port, "alice@example.com", ["bob@dest.example", "carol@slow.example"],
               message("held"))
        assert wait_for(lambda: of(relay, "bounce"))
        assert wait_for(lambda: slow.messages == 0 and any(
            c.startswith(b"RCPT TO:<carol") for c in slow.commands))
        time.sleep(2.0)  # commits and ticks go by: the DSN still waits for carol
        assert sink_files(good) == []
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait()
        relay.log.close()
        servers.remove(relay)
    finally:
        slow.stop()
    fast = start_sink(datadir)
    servers.append(fast)
    args[3] = "slow.example=" + fast.hop
    relay2 = start_relay(datadir, args, spool=relay.spool, name="relay2")
    servers.append(relay2)
    dsn = wait_for(lambda: sink_files(good), timeout=20)
    assert dsn and len(dsn) == 1
    blocks = dsn_blocks(dsn[0])
    assert len(blocks) == 1 and b"bob@dest.example" in blocks[0]
    assert wait_for(lambda: rcpts_of_sink(fast) == ["carol@slow.example"])
    time.sleep(1.0)
    assert len(sink_files(good)) == 1
    stop_clean(relay2)


def rcpts_of_sink(sink):
    return [line.split(b"<")[1].split(b">")[0].decode() for f in sink_files(sink)
            for line in f.split(b"\n") if line.startswith(b"X-Rcpt-Args: <")]
