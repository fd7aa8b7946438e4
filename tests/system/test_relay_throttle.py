"""mailrep relay's [throttle] rules: a receiver's reply that matches a
rule lowers that site's limits, or holds the site, for the rule's
duration; then the configured limits return. The receiver is a counting
sink on loopback that answers one recipient with a Gmail-style rate
reply. The relay's clock is a file the test moves (MAILREP_NOW=file:PATH),
so a rule's end comes without waiting for it."""
import json
import os
import smtplib
import subprocess
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_peers import PeerSink
from relay_util import MAILREP, events, start_relay, stop_clean, submit, wait_for

RATE = (b"451 4.7.28 [127.0.0.1] Our system has detected an unusual rate of "
        b"unsolicited mail originating from your IP address")
T0 = "2026-11-23T10:00:00Z"
T2H = "2026-11-23T12:00:00Z"


def set_clock(path, iso):
    with open(path + ".tmp", "w") as f:
        f.write(iso + "\n")
    os.replace(path + ".tmp", path)


def rate_once():
    """A reply function for the sink: RATE to the first RCPT of trigger@,
    250 to everything else."""
    fired = []

    def reply(line):
        if b"trigger@" in line and not fired:
            fired.append(1)
            return RATE
        return None
    return reply


def config(datadir, sink, throttle):
    path = os.path.join(datadir, "relay.ini")
    with open(path, "w") as f:
        f.write("[relay]\ntrusted = 127.0.0.1\nroute = *=127.0.0.1:%d\n\n" % sink.port)
        f.write("[throttle gmail-rate]\nmatch = 4\\.7\\.28 .*unusual rate\n%s" % throttle)
    return path


def start(datadir, servers, monkeypatch, sink, throttle):
    clock = os.path.join(datadir, "clock")
    set_clock(clock, T0)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    relay = start_relay(datadir, ["-c", config(datadir, sink, throttle)])
    servers.append(relay)
    return relay, clock


def of(relay, event, **match):
    return [e for e in events(relay)
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


def submit_many(relay, first, n):
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    s.ehlo("client.test")
    for i in range(first, first + n):
        submit(relay.port, "alice@example.com", ["u%d@dest.example" % i], conn=s)
    s.quit()


def summary(relay):
    q = subprocess.run([MAILREP, "queue", "--spool", relay.spool, "--json"],
                       capture_output=True, timeout=60)
    assert q.returncode == 0, q.stderr
    return json.loads(q.stdout)


def test_conn_limit_rule_holds_for_its_duration_then_lifts(datadir, servers, monkeypatch):
    sink = PeerSink(delay=0.3, rcpt_reply_for=rate_once())
    try:
        relay, clock = start(datadir, servers, monkeypatch, sink,
                             "action = conn-limit 1\nduration = 1h\n")
        submit(relay.port, "alice@example.com", ["trigger@dest.example"])
        assert wait_for(lambda: of(relay, "throttle")), relay.output()
        ev = of(relay, "throttle")[0]
        assert ev["rule"] == "gmail-rate" and ev["action"] == "conn-limit" and ev["value"] == 1
        assert ev["site"] == "127.0.0.1:%d" % sink.port and ev["until"] == "2026-11-23T11:00:00Z"
        assert ev["reply"].startswith("451 4.7.28"), ev
        held = summary(relay)["held"]
        assert held == [{"site": "127.0.0.1:%d" % sink.port, "pool": None,
                         "suspended_until": None,
                         "throttle": {"rule": "gmail-rate", "until": "2026-11-23T11:00:00Z",
                                      "conn_limit": 1}}], held
        # while the rule holds: one connection at a time, where 10 are allowed
        with sink.lock:
            sink.max = sink.current
        submit_many(relay, 0, 6)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 6, timeout=60), relay.output()
        assert sink.max == 1, sink.max
        # two hours later the rule has ended: the same load opens more
        set_clock(clock, T2H)
        assert wait_for(lambda: "throttle gmail-rate ended" in relay.output(), timeout=20)
        with sink.lock:
            sink.max = sink.current
        submit_many(relay, 6, 6)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 12, timeout=60), relay.output()
        assert sink.max >= 2, sink.max
        assert summary(relay)["held"] == []
        assert len(of(relay, "throttle")) == 1  # the rule matched once
        stop_clean(relay)
    finally:
        sink.stop()


def test_suspend_rule_holds_the_site_for_its_duration(datadir, servers, monkeypatch):
    sink = PeerSink(delay=0, rcpt_reply_for=rate_once())
    try:
        relay, clock = start(datadir, servers, monkeypatch, sink,
                             "action = suspend\nduration = 1h\n")
        submit(relay.port, "alice@example.com", ["trigger@dest.example"])
        assert wait_for(lambda: of(relay, "throttle", action="suspend")), relay.output()
        assert "value" not in of(relay, "throttle")[0]
        submit(relay.port, "alice@example.com", ["later@dest.example"])
        # held: nothing goes to the site for three ticks of the scheduler
        time.sleep(3)
        assert not of(relay, "delivery"), relay.output()
        held = summary(relay)["held"]
        assert len(held) == 1 and held[0]["suspended_until"] == "2026-11-23T11:00:00Z", held
        # after the hold, both are delivered (the trigger's retry is due too)
        set_clock(clock, T2H)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 2, timeout=30), relay.output()
        assert {e["rcpt"] for e in of(relay, "delivery")} == {"later@dest.example",
                                                              "trigger@dest.example"}
        stop_clean(relay)
    finally:
        sink.stop()


def test_a_reply_no_rule_matches_changes_nothing(datadir, servers, monkeypatch):
    sink = PeerSink(delay=0, rcpt_reply_for=lambda line: (
        b"451 4.7.1 greylisted, try again later" if b"trigger@" in line else None))
    try:
        relay, _ = start(datadir, servers, monkeypatch, sink,
                         "action = conn-limit 1\nduration = 1h\n")
        submit(relay.port, "alice@example.com", ["trigger@dest.example"])
        assert wait_for(lambda: of(relay, "transient")), relay.output()
        assert not of(relay, "throttle") and summary(relay)["held"] == []
        stop_clean(relay)
    finally:
        sink.stop()


def run_relay(conf):
    return subprocess.run([MAILREP, "relay", "-c", conf, "--listen", "127.0.0.1:1",
                           "--spool", "/nonexistent"], capture_output=True, text=True,
                          timeout=30)


def test_bad_throttle_rules_are_refused(datadir):
    conf = os.path.join(datadir, "bad.ini")
    cases = [
        ("match = x\naction = conn-limit 0\nduration = 1h\n", "bad.ini:3",
         "conn-limit needs a number of at least 1"),
        ("match = x\naction = slow-down\nduration = 1h\n", "bad.ini:3", "unknown action"),
        ("match = (x{2}){99}\naction = suspend\nduration = 1h\n", "bad.ini:2",
         "interval expressions"),
        ("match = x\naction = suspend 3\nduration = 1h\n", "bad.ini:3", "takes no number"),
        ("match = x\naction = suspend\nduration = 0s\n", "bad.ini:4", "duration"),
        ("match = x\naction = suspend\nfrobs = 1\n", "bad.ini:4", "unknown setting 'frobs'"),
        ("match = x\nduration = 1h\n", "throttle t", "no action given"),
        ("action = suspend\nduration = 1h\n", "throttle t", "no match given"),
    ]
    for body, where, what in cases:
        with open(conf, "w") as f:
            f.write("[throttle t]\n" + body)
        r = run_relay(conf)
        assert r.returncode != 0 and where in r.stderr and what in r.stderr, (body, r.stderr)
