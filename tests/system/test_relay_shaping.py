"""mailrep relay's shaping, against counting sinks on loopback: the
message rate (--msgs-per-sec) and new-connection rate (--conns-per-min)
hold, a [domain NAME] override takes effect on that domain's site only,
and domains whose MX hosts are the same share one site and its connection
limit (served by knotd). Rate checks assert lower bounds on elapsed time,
which a loaded machine can only make longer, against controls without the
limit."""
import os
import threading
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_peers import PeerSink
from relay_util import start_relay, stop_clean, submit, wait_for
import smtplib


class GatedSink(PeerSink):
    """Holds every session before its greeting until open() is called."""

    def __init__(self, **kw):
        self.gate = threading.Event()
        super().__init__(**kw)

    def session(self, c):
        self.gate.wait(60)
        super().session(c)

    def open(self):
        self.gate.set()


def submit_many(relay, n, domain="dest.example", first=0):
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    s.ehlo("client.test")
    for i in range(first, first + n):
        submit(relay.port, "alice@example.com", ["u%d@%s" % (i, domain)], conn=s)
    s.quit()


def timed_delivery(datadir, servers, extra, n=30):
    """Seconds from opening the gate to the n-th message at the sink."""
    sink = GatedSink(delay=0)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1"] + extra,
                            spool=os.path.join(datadir, "spool-%d" % sink.port))
        servers.append(relay)
        submit_many(relay, n)
        t0 = time.monotonic()
        sink.open()
        assert wait_for(lambda: sink.messages >= n, timeout=60), relay.output()
        elapsed = time.monotonic() - t0
        stop_clean(relay)
        return elapsed
    finally:
        sink.open()
        sink.stop()


def test_msgs_per_sec_holds(datadir, servers):
    # 30 messages at 5 a second, 5 at once at most: at least 5 s
    limited = timed_delivery(datadir, servers, ["--msgs-per-sec", "5"])
    assert limited >= 4.0, limited
    # the control: without the limit the same 30 go much faster
    free = timed_delivery(datadir, servers, [])
    assert free < 4.0 and free < limited, (free, limited)


def conn_span(datadir, servers, extra, n=10):
    """Seconds between the first and the n-th connection at the sink."""
    sink = PeerSink(delay=0)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--msgs-per-conn", "1"] + extra,
                            spool=os.path.join(datadir, "spool-%d" % sink.port))
        servers.append(relay)
        submit_many(relay, n)
        assert wait_for(lambda: sink.messages >= n, timeout=60), relay.output()
        assert sink.connections == n
        times = sorted(sink.conn_times)
        stop_clean(relay)
        return times[n - 1] - times[0]
    finally:
        sink.stop()


def test_conns_per_min_holds(datadir, servers):
    # 120 a minute: one every 0.5 s after a burst of 2; 10 connections take >= 4 s
    limited = conn_span(datadir, servers, ["--conns-per-min", "120"])
    assert limited >= 3.0, limited
    free = conn_span(datadir, servers, [])
    assert free < 3.0 and free < limited, (free, limited)


def test_domain_override(datadir, servers):
    slow, fast = PeerSink(delay=0.2), PeerSink(delay=0.2)
    try:
        conf = os.path.join(datadir, "relay.ini")
        with open(conf, "w") as f:
            f.write("[relay]\ntrusted = 127.0.0.1\nroute = slow.example=127.0.0.1:%d\n"
                    "route = fast.example=127.0.0.1:%d\n\n"
                    "[domain slow.example]\nconn-limit = 1\nmsgs-per-conn = 3\n"
                    % (slow.port, fast.port))
        relay = start_relay(datadir, ["-c", conf])
        servers.append(relay)
        submit_many(relay, 12, "slow.example")
        submit_many(relay, 12, "fast.example")
        assert wait_for(lambda: slow.messages >= 12 and fast.messages >= 12, timeout=60)
        assert slow.max == 1, slow.max
        assert max(slow.per_conn) <= 3 and slow.connections >= 4, slow.per_conn
        assert fast.max >= 2, fast.max  # the default (10) elsewhere
        stop_clean(relay)
    finally:
        slow.stop()
        fast.stop()


def test_domains_with_the_same_mx_hosts_share_a_site(datadir, servers):
    zones = {
        "a.example": soa("a.example") + "@ MX 10 mx.shared.test.\n",
        "b.example": soa("b.example") + "@ MX 10 mx.shared.test.\n",
        "c.example": soa("c.example") + "@ MX 10 mx.other.test.\n",
        "shared.test": soa("shared.test") + "mx A 127.0.0.1\n",
        "other.test": soa("other.test") + "mx A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    sink = PeerSink(delay=0.3)
    try:
        relay = start_relay(datadir, ["--resolver", knot.resolver, "--smtp-port", str(sink.port),
                                      "--trusted", "127.0.0.1", "--conn-limit", "2"])
        servers.append(relay)
        # a and b: one site, at most 2 connections between them
        t = [threading.Thread(target=submit_many, args=(relay, 8, d)) for d in ("a.example", "b.example")]
        [x.start() for x in t]
        [x.join() for x in t]
        assert wait_for(lambda: sink.messages >= 16, timeout=60), relay.output()
        assert sink.max == 2, sink.max
        # the control: a and c are two sites (same address, other MX name), 2 each
        wait_for(lambda: sink.current == 0)
        sink.max = 0
        t = [threading.Thread(target=submit_many, args=(relay, 8, d, 100)) for d in ("a.example", "c.example")]
        [x.start() for x in t]
        [x.join() for x in t]
        assert wait_for(lambda: sink.messages >= 32, timeout=60), relay.output()
        assert 3 <= sink.max <= 4, sink.max
        stop_clean(relay)
    finally:
        sink.stop()


class OpenCount:
    """Connections open now, and their maximum, over several sinks."""

    def __init__(self):
        self.lock, self.now, self.max = threading.Lock(), 0, 0


class CountedSink(PeerSink):
    def __init__(self, count, **kw):
        self.count = count
        super().__init__(**kw)

    def session(self, c):
        with self.count.lock:
            self.count.now += 1
            self.count.max = max(self.count.max, self.count.now)
        try:
            super().session(c)
        finally:
            with self.count.lock:
                self.count.now -= 1


def test_max_outbound_holds_over_every_site(datadir, servers):
    """Four sites (four sinks, each answering slowly) and --max-outbound 2:
    never more than two connections open in all, where each site alone
    would allow ten; every message still goes, each connection giving way
    to another site's waiting mail instead of lingering."""
    count = OpenCount()
    sinks = [CountedSink(count, delay=0.3) for _ in range(4)]
    try:
        routes = []
        for i, s in enumerate(sinks):
            routes += ["--route", "d%d.example=127.0.0.1:%d" % (i, s.port)]
        relay = start_relay(datadir, routes + ["--trusted", "127.0.0.1", "--max-outbound", "2"])
        servers.append(relay)
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
        s.ehlo("client.test")
        for i in range(16):
            submit(relay.port, "alice@example.com", ["u%d@d%d.example" % (i, i % 4)], conn=s)
        s.quit()
        assert wait_for(lambda: sum(k.messages for k in sinks) >= 16, timeout=60), \
            relay.output()
        assert count.max == 2, count.max
        assert all(k.messages == 4 for k in sinks), [k.messages for k in sinks]
        stop_clean(relay)
    finally:
        for k in sinks:
            k.stop()


def test_max_outbound_is_fitted_to_the_open_file_limit(datadir, servers):
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))
    sink = PeerSink(delay=0)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1"], preexec_fn=low_limit)
        servers.append(relay)
        # 400 files - 256 inbound sessions - a reserve of 64
        assert wait_for(lambda: "and the limit is 400: at most 80 outbound connections"
                        in relay.output(), timeout=10), relay.output()
        submit(relay.port, "alice@example.com", ["bob@dest.example"])
        assert wait_for(lambda: sink.messages >= 1, timeout=30), relay.output()
        stop_clean(relay)
    finally:
        sink.stop()


def test_max_outbound_places_go_round_the_sites(datadir, servers):
    """One outbound connection in all, one message a connection, three
    sites with five messages each: the place goes round the sites instead
    of serving one site's whole queue before the next."""
    count = OpenCount()
    sinks = [CountedSink(count, delay=0) for _ in range(3)]
    try:
        routes = []
        for i, s in enumerate(sinks):
            routes += ["--route", "d%d.example=127.0.0.1:%d" % (i, s.port)]
        relay = start_relay(datadir, routes + ["--trusted", "127.0.0.1", "--max-outbound", "1",
                                               "--msgs-per-conn", "1"])
        servers.append(relay)
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
        s.ehlo("client.test")
        for i in range(15):
            submit(relay.port, "alice@example.com", ["u%d@d%d.example" % (i, i // 5)], conn=s)
        s.quit()
        assert wait_for(lambda: sum(k.messages for k in sinks) >= 15, timeout=60), \
            relay.output()
        assert count.max == 1, count.max
        order = [k for _, k in sorted((t, k) for k, s in enumerate(sinks) for t in s.conn_times)]
        assert len(order) == 15
        # the mail is queued while the first connections go: from the
        # fourth on, no site has two turns in a row while others wait
        tail = order[3:12]
        assert all(a != b for a, b in zip(tail, tail[1:])), order
        stop_clean(relay)
    finally:
        for k in sinks:
            k.stop()
