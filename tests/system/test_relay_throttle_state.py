"""mailrep relay's shaping state across restarts, and the scope of a
[throttle] rule. A rule in force and a back-off after a 421 greeting are
kept in SPOOL/shaping: after kill -9 the restarted relay still keeps to
them until their original end (the relay's clock is a file the test
moves, MAILREP_NOW=file:PATH). A rule scoped to the source (the default)
holds back only the source address whose connection got the reply: a
counting sink answers Gmail's 451 4.7.28 to connections from 127.0.0.2
alone, and 127.0.0.3 keeps its full connection limit; with `scope = site`
both are held. A damaged state file is reported by line and the relay
starts anyway."""
import os
import signal
import smtplib
import threading
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_peers import PeerSink
from relay_util import message, start_relay, stop_clean, submit, wait_for
from test_relay_throttle import RATE, T0, T2H, of, rate_once, set_clock, submit_many, summary

POOL = "\ndefault-pool = bulk\n\n[pool bulk]\nsource = 127.0.0.2\nsource = 127.0.0.3\n"


def write_config(datadir, port, relay_extra="", rules=""):
    path = os.path.join(datadir, "relay.ini")
    with open(path, "w") as f:
        f.write("[relay]\ntrusted = 127.0.0.1\nroute = *=127.0.0.1:%d\n%s\n%s"
                % (port, relay_extra, rules))
    return path


def start(datadir, servers, monkeypatch, conf, name="relay"):
    clock = os.path.join(datadir, "clock")
    if not os.path.exists(clock):
        set_clock(clock, T0)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    relay = start_relay(datadir, ["-c", conf], name=name)
    servers.append(relay)
    return relay, clock


def state(relay):
    try:
        with open(os.path.join(relay.spool, "shaping")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def kill_9(relay, servers):
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait()
    relay.log.close()
    servers.remove(relay)


GMAIL_RULE = ("[throttle gmail-rate]\nmatch = 4\\.7\\.28 .*unusual rate\n"
              "action = conn-limit 1\nduration = 1h\n")


def test_throttle_rule_in_force_survives_kill_9(datadir, servers, monkeypatch):
    sink = PeerSink(delay=0.3, rcpt_reply_for=rate_once())
    try:
        conf = write_config(datadir, sink.port, rules=GMAIL_RULE)
        relay, clock = start(datadir, servers, monkeypatch, conf)
        submit(relay.port, "alice@example.com", ["trigger@dest.example"])
        assert wait_for(lambda: of(relay, "throttle")), relay.output()
        line = ("throttle site=127.0.0.1 port=%d pool=- source=- until=1795431600 "
                "rule=gmail-rate\n" % sink.port)
        assert wait_for(lambda: line in state(relay)), (state(relay), relay.output())
        kill_9(relay, servers)

        relay, _ = start(datadir, servers, monkeypatch, conf, name="relay2")
        assert "restored until 2026-11-23T11:00:00Z" in relay.output(), relay.output()
        held = summary(relay)["held"]
        assert held == [{"site": "127.0.0.1:%d" % sink.port, "pool": None,
                         "suspended_until": None,
                         "throttle": {"rule": "gmail-rate", "until": "2026-11-23T11:00:00Z",
                                      "conn_limit": 1}}], held
        assert summary(relay)["suspended"] == []  # not an administrator's suspension
        # the restarted relay keeps to one connection, where 10 are allowed
        with sink.lock:
            sink.max = sink.current
        submit_many(relay, 0, 6)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 6, timeout=60), relay.output()
        assert sink.max == 1, sink.max
        # past the rule's original end, the same load opens several
        set_clock(clock, T2H)
        assert wait_for(lambda: "throttle gmail-rate ended" in relay.output(), timeout=20)
        with sink.lock:
            sink.max = sink.current
        submit_many(relay, 6, 6)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 13, timeout=60), relay.output()
        assert sink.max >= 2, sink.max
        assert summary(relay)["held"] == []
        stop_clean(relay)
    finally:
        sink.stop()


class GreetingSink(PeerSink):
    """A counting sink whose greeting is `greeting` (then it hangs up)
    while that is set, and a normal 220 once it is None."""

    def __init__(self, greeting, **kw):
        self.greeting = greeting
        super().__init__(**kw)

    def session(self, c):
        if self.greeting is None:
            return super().session(c)
        with self.lock:
            self.connections += 1
        try:
            c.sendall(self.greeting + b"\r\n")
        finally:
            c.close()


def test_421_greeting_back_off_survives_kill_9(datadir, servers, monkeypatch):
    sink = GreetingSink(b"421 4.7.0 [TSS04] Messages temporarily deferred", delay=0)
    try:
        conf = write_config(datadir, sink.port, "suspend = 1h\nretry-schedule = 1s\n")
        relay, clock = start(datadir, servers, monkeypatch, conf)
        submit(relay.port, "alice@example.com", ["bob@dest.example"])
        assert wait_for(lambda: of(relay, "transient")), relay.output()
        line = ("suspend site=127.0.0.1 port=%d pool=- source=- until=1795431600 rule=-\n"
                % sink.port)
        assert wait_for(lambda: line in state(relay)), (state(relay), relay.output())
        kill_9(relay, servers)
        sink.greeting = None  # the receiver would take mail again
        before = sink.connections

        relay, _ = start(datadir, servers, monkeypatch, conf, name="relay2")
        held = summary(relay)["held"]
        assert held == [{"site": "127.0.0.1:%d" % sink.port, "pool": None,
                         "suspended_until": "2026-11-23T11:00:00Z", "throttle": None}], held
        # new mail waits for the back-off's original end: no connection at all
        submit(relay.port, "alice@example.com", ["carol@dest.example"])
        time.sleep(3)
        assert sink.connections == before, relay.output()
        assert not of(relay, "delivery")
        set_clock(clock, T2H)
        assert wait_for(lambda: len(of(relay, "delivery")) >= 2, timeout=30), relay.output()
        assert {e["rcpt"] for e in of(relay, "delivery")} == {"bob@dest.example",
                                                              "carol@dest.example"}
        stop_clean(relay)
    finally:
        sink.stop()


class PerSourceSink(PeerSink):
    """A counting sink that answers Gmail's rate reply to the first RCPT
    that comes from address `throttled`, and 250 to everything else."""

    def __init__(self, throttled, **kw):
        self.local, self.throttled, self.fired = threading.local(), throttled, 0
        super().__init__(rcpt_reply_for=self.reply, **kw)

    def session(self, c):
        self.local.peer = c.getpeername()[0]
        super().session(c)

    def reply(self, line):
        with self.lock:
            if self.local.peer == self.throttled and not self.fired:
                self.fired = 1
                return RATE
        return None


def load_per_source(relay, sink, first, n):
    """Submits n messages at once; returns the most connections each
    source had open at the same time while they went out."""
    with sink.lock:
        sink.peer_max = dict(sink.peer_now)
    done = len(of(relay, "delivery"))
    submit_many(relay, first, n)
    assert wait_for(lambda: len(of(relay, "delivery")) >= done + n, timeout=60), relay.output()
    with sink.lock:
        return dict(sink.peer_max)


def trigger(relay):
    """Submits one message at a time until the rule matches (the first
    connection of a new destination comes from the pool's first source)."""
    for i in range(6):
        submit(relay.port, "alice@example.com", ["first%d@dest.example" % i])
        if wait_for(lambda: of(relay, "throttle") or len(of(relay, "delivery")) > i,
                    timeout=20) and of(relay, "throttle"):
            return of(relay, "throttle")[0]
    raise AssertionError(relay.output())


def test_rule_scoped_to_the_source_that_got_the_reply(datadir, servers, monkeypatch):
    sink = PerSourceSink("127.0.0.2", delay=0.3)
    try:
        conf = write_config(datadir, sink.port, "conn-limit = 3" + POOL, GMAIL_RULE)
        relay, _ = start(datadir, servers, monkeypatch, conf)
        ev = trigger(relay)
        assert ev["source"] == "127.0.0.2" and ev["pool"] == "bulk", ev
        site = "127.0.0.1:%d" % sink.port
        want = [{"site": site, "pool": "bulk", "source": "127.0.0.2", "suspended_until": None,
                 "throttle": {"rule": "gmail-rate", "until": "2026-11-23T11:00:00Z",
                              "conn_limit": 1}}]
        assert summary(relay)["held"] == want
        assert "source 127.0.0.2 throttle gmail-rate" in summary(relay)["text"]
        # only 127.0.0.2 is held to one connection; 127.0.0.3 keeps its three
        peak = load_per_source(relay, sink, 0, 24)
        assert peak == {"127.0.0.2": 1, "127.0.0.3": 3}, peak
        # kept across kill -9 like a site-wide rule
        line = ("throttle site=127.0.0.1 port=%d pool=bulk source=127.0.0.2 until=1795431600 "
                "rule=gmail-rate\n" % sink.port)
        assert wait_for(lambda: line in state(relay)), state(relay)
        kill_9(relay, servers)
        relay, _ = start(datadir, servers, monkeypatch, conf, name="relay2")
        assert summary(relay)["held"] == want
        peak = load_per_source(relay, sink, 100, 24)
        assert peak == {"127.0.0.2": 1, "127.0.0.3": 3}, peak
        stop_clean(relay)
    finally:
        sink.stop()


def test_rule_scoped_to_a_source_holds_it_in_every_pool(datadir, servers, monkeypatch):
    """The receiver sees an address, not a pool: a rule put on 127.0.0.2 by
    a reply in pool bulk also holds 127.0.0.2 to one connection when pool
    tx, which sends from the same address, has mail for the site."""
    sink = PerSourceSink("127.0.0.2", delay=0.3)
    try:
        conf = write_config(datadir, sink.port, "conn-limit = 3" + POOL +
                            "\n[pool tx]\nsource = 127.0.0.2\n", GMAIL_RULE)
        relay, _ = start(datadir, servers, monkeypatch, conf)
        ev = trigger(relay)
        assert ev["source"] == "127.0.0.2" and ev["pool"] == "bulk", ev
        with sink.lock:
            sink.peer_max = dict(sink.peer_now)
        done = len(of(relay, "delivery"))
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
        s.ehlo("client.test")
        for i in range(12):
            submit(relay.port, "alice@example.com", ["tx%d@dest.example" % i],
                   data="X-Mailrep-Pool: tx\r\n" + message("tx%d" % i), conn=s)
        s.quit()
        assert wait_for(lambda: len(of(relay, "delivery")) >= done + 12, timeout=60), \
            relay.output()
        assert {e["pool"] for e in of(relay, "delivery")[done:]} == {"tx"}
        with sink.lock:
            assert sink.peer_max == {"127.0.0.2": 1}, sink.peer_max
        stop_clean(relay)
    finally:
        sink.stop()


def test_rule_scoped_to_the_site_holds_every_source(datadir, servers, monkeypatch):
    sink = PerSourceSink("127.0.0.2", delay=0.3)
    try:
        conf = write_config(datadir, sink.port, "conn-limit = 3" + POOL,
                            GMAIL_RULE + "scope = site\n")
        relay, _ = start(datadir, servers, monkeypatch, conf)
        ev = trigger(relay)
        assert ev["source"] is None and ev["pool"] == "bulk", ev
        held = summary(relay)["held"]
        assert len(held) == 1 and "source" not in held[0] and held[0]["pool"] == "bulk", held
        peak = load_per_source(relay, sink, 0, 24)
        assert peak == {"127.0.0.2": 1, "127.0.0.3": 1}, peak
        stop_clean(relay)
    finally:
        sink.stop()


def test_damaged_or_stale_state_is_reported_and_the_relay_starts(datadir, servers,
                                                                 monkeypatch):
    conf = write_config(datadir, 9, "", GMAIL_RULE)
    spool = os.path.join(datadir, "spool")
    os.makedirs(spool, mode=0o700)
    with open(os.path.join(spool, "shaping"), "wb") as f:
        f.write(b"# a comment\n"
                b"throttle site=mx.example port=25 pool=- source=- until=1795431600 "
                b"rule=gmail-rate\n"
                b"throttle site=mx.example port=25 pool=- source=- until=zzz rule=gmail-rate\n"
                b"suspend site=old.example port=25 pool=- source=- until=1795420000 rule=-\n"
                b"throttle site=gone.example port=25 pool=- source=- until=1795431600 "
                b"rule=no-such-rule\n"
                b"suspend site=mx.example port=25 pool=nopool source=- until=1795431600 "
                b"rule=-\n"
                b"\x00\xff garbage\n"
                b"suspend site=mx.example port=25")  # torn: no newline, cut short
    relay, _ = start(datadir, servers, monkeypatch, conf)
    out = relay.output()
    assert "shaping:3: byte 56: until= is not a UNIX time, ignored" in out, out
    assert "shaping:4: back-off of old.example:25 ended at 2026-11-23T07:46:40Z, dropped" \
        in out, out
    assert "shaping:5: throttle no-such-rule of gone.example:25: no [throttle no-such-rule] " \
        "rule is configured now, dropped" in out, out
    assert "shaping:6: back-off of mx.example:25 pool nopool: no pool nopool is " \
        "configured now, dropped" in out, out
    assert "shaping:7: byte 1 is not printable ASCII (0x00), ignored" in out, out
    assert "shaping:8: byte 32: pool= is missing, ignored" in out, out
    held = summary(relay)["held"]
    assert held == [{"site": "mx.example:25", "pool": None, "suspended_until": None,
                     "throttle": {"rule": "gmail-rate", "until": "2026-11-23T11:00:00Z",
                                  "conn_limit": 1}}], held
    # the dropped lines leave the file at the rewrite that follows
    assert wait_for(lambda: state(relay).count("\n") == 2 and "mx.example" in state(relay)), \
        state(relay)
    stop_clean(relay)
