"""mailrep relay's IP pools, against smtp-sink and a counting sink on
loopback: a pool's source addresses are bound in their weighted ratio and
each says its own EHLO name (read back from the sink's dumps: X-Client-Addr
and X-Helo-Args), the accounting log names the bound source and the pool,
the connection limit holds per source address, pools come from [pool NAME]
sections as well as --pool, an IPv6 source works, and bad pool settings
are refused with an error that says where."""
import os
import subprocess
import smtplib

from conftest import MAILREP, datadir, free_port, servers  # noqa: F401 (fixtures)
from relay_peers import PeerSink, dump_headers, start_sink_at
from relay_util import events, message, start_relay, start_sink, stop_clean, submit, wait_for


def deliveries(relay):
    return [e for e in events(relay) if e["event"] == "delivery"]


def submit_many(relay, n, domain="dest.example"):
    s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    s.ehlo("client.test")
    for i in range(n):
        submit(relay.port, "alice@example.com", ["u%d@%s" % (i, domain)], conn=s)
    s.quit()


def test_weighted_sources_and_their_ehlo_names(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--pool", "bulk=127.0.0.2/mta2.test*3,127.0.0.3/mta3.test",
                                  "--default-pool", "bulk", "--msgs-per-conn", "1",
                                  # no source may reach its connection limit: a source at
                                  # its limit is passed over, which on a slow machine would
                                  # move the ratio (limits come before weights)
                                  "--conn-limit", "100"])
    servers.append(relay)
    submit_many(relay, 40)
    assert wait_for(lambda: len(deliveries(relay)) == 40, timeout=60), relay.output()
    addrs = dump_headers(sink, b"X-Client-Addr")
    helos = dump_headers(sink, b"X-Helo-Args")
    assert len(addrs) == 40 and len(helos) == 40
    # each source says its own name
    assert set(zip(addrs, helos)) == {("127.0.0.2", "mta2.test"), ("127.0.0.3", "mta3.test")}
    # one message per connection: 3:1 by smooth weighted round robin
    n2, n3 = addrs.count("127.0.0.2"), addrs.count("127.0.0.3")
    assert 26 <= n2 <= 34 and n2 + n3 == 40, (n2, n3)
    # the accounting log names the bound source and the pool
    d = deliveries(relay)
    assert {e["pool"] for e in d} == {"bulk"}
    assert sorted(e["source_ip"] for e in d) == sorted(addrs)
    stop_clean(relay)


def test_conn_limit_holds_per_source_from_config_file(datadir, servers):
    sink = PeerSink(delay=0.3)
    try:
        conf = os.path.join(datadir, "relay.ini")
        with open(conf, "w") as f:
            f.write("[relay]\ntrusted = 127.0.0.1\ndefault-pool = tx\nconn-limit = 2\n"
                    "route = *=127.0.0.1:%d\n\n"
                    "[pool tx]\nsource = 127.0.0.2 ehlo=tx2.test\n"
                    "source = 127.0.0.3   ehlo=tx3.test weight=1\n" % sink.port)
        relay = start_relay(datadir, ["-c", conf])
        servers.append(relay)
        submit_many(relay, 30)
        assert wait_for(lambda: sink.messages >= 30, timeout=60), relay.output()
        # at most 2 at a time from each source, and each source got to 2:
        # the limit is per source address, not per site alone
        assert sink.peer_max == {"127.0.0.2": 2, "127.0.0.3": 2}, sink.peer_max
        assert 3 <= sink.max <= 4, sink.max
        assert set(sink.ehlos()) == {"tx2.test", "tx3.test"}
        assert {e["source_ip"] for e in deliveries(relay)} == {"127.0.0.2", "127.0.0.3"}
        stop_clean(relay)
    finally:
        sink.stop()


def test_ipv6_source_and_family_mismatch(datadir, servers):
    port = free_port()
    sink6 = start_sink_at(datadir, "::1", port)
    servers.append(sink6)
    relay = start_relay(datadir, ["--route", "v6.example=[::1]:%d" % port,
                                  "--route", "*=[::1]:%d" % port,
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h",
                                  "--pool", "six=::1/mta6.test", "--pool", "four=127.0.0.2",
                                  "--default-pool", "six"])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@v6.example"])
    assert wait_for(lambda: deliveries(relay)), relay.output()
    assert dump_headers(sink6, b"X-Client-Addr") == ["ipv6:::1"]
    assert dump_headers(sink6, b"X-Helo-Args") == ["mta6.test"]
    e = deliveries(relay)[0]
    assert e["source_ip"] == "::1" and e["pool"] == "six" and e["mx"] == "[::1]:%d" % port
    stop_clean(relay)


def run_relay(args, timeout=10):
    return subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:%d" % free_port(),
                           "--spool", "/nonexistent/never-created"] + args,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_pool_settings_are_refused(datadir):
    conf = os.path.join(datadir, "bad.ini")
    with open(conf, "w") as f:
        f.write("[relay]\ntrusted = 127.0.0.1\n\n[pool bulk]\nsource = 127.0.0.2\n"
                "source = 300.1.2.3 ehlo=x.test\n")
    r = run_relay(["-c", conf])
    assert r.returncode != 0 and "bad.ini:6" in r.stderr and "300.1.2.3" in r.stderr, r.stderr
    with open(conf, "w") as f:
        f.write("[domain slow.example]\nconn-limit = 1\nfrobs = 2\n")
    r = run_relay(["-c", conf])
    assert r.returncode != 0 and "bad.ini:3" in r.stderr and "frobs" in r.stderr, r.stderr
    for bad, what in [("bulk=127.0.0.2*0", "weight"), ("bulk=127.0.0.2/bad name", "EHLO"),
                      ("=127.0.0.2", "pool name"), ("bulk=127.0.0.2,127.0.0.2", "twice"),
                      ("bulk", "NAME=IP")]:
        r = run_relay(["--pool", bad])
        assert r.returncode != 0 and what in r.stderr, (bad, r.stderr)
    r = run_relay(["--pool", "bulk=127.0.0.2", "--default-pool", "nope"])
    assert r.returncode != 0 and "no pool named 'nope'" in r.stderr, r.stderr


def test_pool_without_the_sites_family_defers(datadir, servers):
    port = free_port()
    sink6 = start_sink_at(datadir, "::1", port)
    servers.append(sink6)
    relay = start_relay(datadir, ["--route", "*=[::1]:%d" % port, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1h", "--pool", "four=127.0.0.2",
                                  "--default-pool", "four"])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@v6.example"])
    t = wait_for(lambda: [e for e in events(relay) if e["event"] == "transient"])
    assert t and t[0]["code"] == 451 and "address family" in t[0]["reply"], events(relay)
    assert dump_headers(sink6, b"X-Client-Addr") == []
    assert "pool four has no source address" in relay.output()
    stop_clean(relay)


def spool_record(msg_id, attrs, rcpt, received):
    """An 'N' message record as docs/RELAY.md describes it."""
    import struct
    import zlib
    body = ("From: alice@example.com\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" %
            (rcpt, msg_id)).encode()
    payload = b"\0".join(x.encode() for x in
                         (msg_id, "alice@example.com", str(received), attrs, "1", rcpt)) + b"\0" + body
    head = b"N\0\0\0" + struct.pack("<I", len(payload))
    return b"MRS1" + head + struct.pack("<I", zlib.crc32(head + payload)) + payload


# two pools sending from one address
SHARED = ["--pool", "news=127.0.0.2/news.test", "--pool", "tx=127.0.0.2/tx.test"]


def split_spool(spool, n, pool_of=lambda i: "news" if i % 2 else "tx"):
    """A spool of n queued messages, the i-th of pool pool_of(i) (by
    default alternately tx and news)."""
    import time
    os.makedirs(spool)
    now = int(time.time())
    with open(os.path.join(spool, "seg-00000001"), "wb") as f:
        for i in range(n):
            pool = pool_of(i)
            f.write(spool_record("m%d.%s" % (i, pool), "pool=" + pool,
                                 "u%d@dest.example" % i, now))
    return spool


def test_pool_named_by_the_spool_record(datadir, servers):
    """The pool= attribute of a queued message picks its pool; a pool that
    does not exist defers the message (with a log line), never bounces it."""
    import time
    sink = start_sink(datadir)
    servers.append(sink)
    spool = os.path.join(datadir, "spool")
    os.makedirs(spool)
    now = int(time.time())
    with open(os.path.join(spool, "seg-00000001"), "wb") as f:
        f.write(spool_record("t1.ghost", "account=acme pool=ghost", "a@dest.example", now))
        f.write(spool_record("t2.tx", "pool=tx", "b@dest.example", now))
        f.write(spool_record("t3.none", "", "c@dest.example", now))
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--retry-schedule", "1h",
                                  "--pool", "bulk=127.0.0.2/bulk.test", "--pool", "tx=127.0.0.3/tx.test",
                                  "--default-pool", "bulk"], spool=spool)
    servers.append(relay)
    assert wait_for(lambda: len(deliveries(relay)) == 2 and
                    [e for e in events(relay) if e["event"] == "transient"]), relay.output()
    got = {e["id"]: (e["pool"], e["source_ip"]) for e in deliveries(relay)}
    assert got == {"t2.tx": ("tx", "127.0.0.3"), "t3.none": ("bulk", "127.0.0.2")}, got
    t = [e for e in events(relay) if e["event"] == "transient"]
    assert [(e["id"], e["pool"], e["code"]) for e in t] == [("t1.ghost", "ghost", 451)], t
    assert "t1.ghost: unknown IP pool 'ghost': deferred" in relay.output()
    assert sorted(dump_headers(sink, b"X-Helo-Args")) == ["bulk.test", "tx.test"]
    assert [e for e in events(relay) if e["event"] == "bounce"] == []
    stop_clean(relay)


def test_pools_sharing_an_address_share_its_limit(datadir, servers):
    """Two pools with the same source address: the connection limit counts
    that address's connections to the site in both pools together (the
    receiver sees one address), and both pools' mail goes."""
    sink = PeerSink(delay=0.3)
    try:
        spool = split_spool(os.path.join(datadir, "spool"), 24)
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "2",
                                      "--msgs-per-conn", "1"] + SHARED, spool=spool)
        servers.append(relay)
        assert wait_for(lambda: sink.messages >= 24, timeout=60), relay.output()
        assert sink.peer_max == {"127.0.0.2": 2}, sink.peer_max
        assert {e["pool"] for e in deliveries(relay)} == {"news", "tx"}
        stop_clean(relay)
    finally:
        sink.stop()


def test_account_naming_an_unconfigured_pool_is_refused(datadir):
    conf = os.path.join(datadir, "acct.ini")
    hashed = subprocess.run([MAILREP, "relay", "--hash-password"], input="pw\n",
                            capture_output=True, text=True, timeout=30).stdout.strip()
    assert hashed.startswith("$pbkdf2-sha256$"), hashed
    pools = "[pool bulk]\nsource = 127.0.0.2\n[pool tx]\nsource = 127.0.0.3\n"
    for keys, refused in [("pool = bulk\npools = tx", None), ("pool = gone", "gone"),
                          ("pool = bulk\npools = tx, lost", "lost")]:
        with open(conf, "w") as f:
            f.write(pools + "[account acme]\npassword = %s\n%s\n" % (hashed, keys))
        r = run_relay(["-c", conf])
        if refused:
            assert r.returncode != 0 and \
                "account acme: no pool named '%s'" % refused in r.stderr, r.stderr
        else:
            # the pools exist: the relay gets past the config and stops at
            # the spool directory it cannot create
            assert r.returncode != 0 and "no pool named" not in r.stderr and \
                "never-created" in r.stderr, r.stderr


def shared_address_span(datadir, servers, pools, n=30):
    """Seconds from the relay's start to the n-th message at the sink, with
    n queued messages split between pools news and tx (pools: their
    --pool arguments), a limit of 5 messages a second, and a connection a
    message, so that both pools keep opening connections."""
    import time
    sink = PeerSink(delay=0)
    try:
        spool = split_spool(os.path.join(datadir, "spool-%d" % sink.port), n)
        t0 = time.monotonic()
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--msgs-per-sec", "5",
                                      "--msgs-per-conn", "1"] + pools,
                            spool=spool)
        servers.append(relay)
        assert wait_for(lambda: sink.messages >= n, timeout=60), relay.output()
        span = time.monotonic() - t0
        assert {e["pool"] for e in deliveries(relay)} == {"news", "tx"}
        stop_clean(relay)
        return span
    finally:
        sink.stop()


def test_pools_sharing_an_address_share_its_rate(datadir, servers):
    """The message rate holds for the address, not for each pool's view of
    it: 30 messages at 5 a second (a burst of 5) take at least 5 s when both
    pools send from 127.0.0.2; with one address each, each address has its
    own 5 a second and the same mail goes in about half the time."""
    shared = shared_address_span(datadir, servers, SHARED)
    assert shared >= 4.0, shared
    apart = shared_address_span(datadir, servers, ["--pool", "news=127.0.0.2/news.test",
                                                   "--pool", "tx=127.0.0.3/tx.test"])
    assert apart < shared, (apart, shared)


def test_an_idle_connection_gives_way_to_another_pool(datadir, servers):
    """With one connection allowed from 127.0.0.2, which both pools use, the
    first pool's connection does not linger idle (2 s) once its mail is
    gone while the other pool's mail waits for the address: the second
    connection follows the first at once."""
    sink = PeerSink(delay=0)
    try:
        spool = split_spool(os.path.join(datadir, "spool"), 2)
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "1"] + SHARED,
                            spool=spool)
        servers.append(relay)
        assert wait_for(lambda: sink.messages >= 2, timeout=30), relay.output()
        assert sink.connections == 2 and sink.peer_max == {"127.0.0.2": 1}, sink.peer_max
        t = sorted(sink.conn_times)
        assert t[1] - t[0] < 1.5, t
        stop_clean(relay)
    finally:
        sink.stop()


def test_a_lingering_connection_gives_way_to_another_pool(datadir, servers):
    """The same, when the other pool's mail comes while the first pool's
    connection already lingers: it is ended at once, not after its 2 s."""
    import time
    sink = PeerSink(delay=0)
    try:
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "1",
                                      "--default-pool", "news"] + SHARED)
        servers.append(relay)
        submit(relay.port, "alice@example.com", ["a@dest.example"])
        assert wait_for(lambda: sink.messages >= 1, timeout=30), relay.output()
        t0 = time.monotonic()
        submit(relay.port, "alice@example.com", ["b@dest.example"],
               data="X-Mailrep-Pool: tx\r\n" + message("tx"))
        assert wait_for(lambda: sink.messages >= 2, timeout=30), relay.output()
        assert time.monotonic() - t0 < 1.5, time.monotonic() - t0
        assert sink.connections == 2 and sink.peer_max == {"127.0.0.2": 1}, sink.peer_max
        assert sorted(e["pool"] for e in deliveries(relay)) == ["news", "tx"]
        stop_clean(relay)
    finally:
        sink.stop()


def test_pools_sharing_an_address_share_its_connections_fairly(datadir, servers):
    """Two connections allowed from 127.0.0.2, a slow receiver, 20 queued
    messages of pool news and 4 of pool tx: news does not keep both
    connections for its whole queue (100 messages a connection would let
    it), it gives one up to tx, whose mail goes while news's is still
    going."""
    sink = PeerSink(delay=0.3)
    try:
        spool = split_spool(os.path.join(datadir, "spool"), 24,
                            lambda i: "news" if i < 20 else "tx")
        relay = start_relay(datadir, ["--route", "*=127.0.0.1:%d" % sink.port,
                                      "--trusted", "127.0.0.1", "--conn-limit", "2"] + SHARED,
                            spool=spool)
        servers.append(relay)
        assert wait_for(lambda: sink.messages >= 24, timeout=60), relay.output()
        assert sink.peer_max == {"127.0.0.2": 2}, sink.peer_max
        pools = [e["pool"] for e in deliveries(relay)]
        last_news = max(i for i, p in enumerate(pools) if p == "news")
        assert pools.index("tx") < last_news and pools[-1] == "news", pools
        stop_clean(relay)
    finally:
        sink.stop()
