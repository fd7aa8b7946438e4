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
