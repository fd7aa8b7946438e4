"""mailrep relay's MX routing through the shared DNS client, against
knotd on loopback: MX in preference order (an unreachable-name MX of
better preference is skipped), the domain's own A record when it has no
MX, null MX (RFC 7505) and nonexistent domains bounced at once with a DSN
that itself travels by MX."""
from conftest import datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_util import events, message, sink_files, start_relay, start_sink, stop_clean, \
    submit, wait_for


def test_mx_routing(datadir, servers):
    zones = {
        "example.com": soa("example.com") + "@ MX 10 mx.example.com.\nmx A 127.0.0.1\n",
        "dest.example": soa("dest.example") +
        "@ MX 5 nowhere.dest.example.\n@ MX 10 mx1.dest.example.\nmx1 A 127.0.0.1\n",
        "plain.example": soa("plain.example") + "@ A 127.0.0.1\n",
        "nullmx.example": soa("nullmx.example") + "@ MX 0 .\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--resolver", knot.resolver, "--smtp-port", str(sink.port),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s"])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@dest.example", "carol@plain.example"],
           message("bymx"))
    d = wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == 2)
    assert d, events(relay)
    for e in events(relay):
        if e["event"] == "delivery":
            assert e["mx"] == "127.0.0.1:%d" % sink.port
    submit(relay.port, "alice@example.com", ["x@nullmx.example"], message("nullmx"))
    submit(relay.port, "alice@example.com", ["y@gone.dest.example"], message("gone"))
    b = wait_for(lambda: len([e for e in events(relay) if e["event"] == "bounce"]) == 2 and
                 [e for e in events(relay) if e["event"] == "bounce"])
    assert b, "\n".join(str((e["event"], e.get("rcpt"), e.get("code"), e["reply"])) for e in events(relay))
    codes = sorted((e["rcpt"], e["code"]) for e in b)
    assert codes == [("x@nullmx.example", 556), ("y@gone.dest.example", 550)]
    # the two DSNs reach alice through example.com's MX
    dsns = wait_for(lambda: [f for f in sink_files(sink) if b"X-Mail-Args: <>" in f])
    assert len(dsns) == 2 and all(b"X-Rcpt-Args: <alice@example.com>" in f for f in dsns)
    assert [e for e in events(relay) if e["event"] == "transient"] == []
    stop_clean(relay)


def test_mx_failover_and_aaaa(datadir, servers):
    """Every peer listens on the same port (--smtp-port) at its own loopback
    address: 127.0.0.1 accepts, 127.0.0.2 and .4 greet 5xx, .5 greets 4xx,
    nothing listens on .3 (refused), and ::1 accepts over IPv6."""
    from conftest import free_port
    from relay_peers import dump_headers, start_sink_at
    port = free_port()
    good = start_sink_at(datadir, "127.0.0.1", port)
    servers.append(good)
    for host, opt in (("127.0.0.2", "-f"), ("127.0.0.4", "-f"), ("127.0.0.5", "-r")):
        servers.append(start_sink_at(datadir, host, port, [opt, "CONNECT"]))
    six = start_sink_at(datadir, "::1", port)
    servers.append(six)

    def mx(origin, hosts):
        z = soa(origin)
        for i, (name, rr) in enumerate(hosts):
            z += "@ MX %d %s\n%s %s\n" % (10 * (i + 1), name, name, rr)
        return z
    zones = {
        "refused.example": mx("refused.example", [("mx1", "A 127.0.0.3"), ("mx2", "A 127.0.0.1")]),
        "five.example": mx("five.example", [("bad", "A 127.0.0.2"), ("good", "A 127.0.0.1")]),
        "allfive.example": mx("allfive.example", [("bad1", "A 127.0.0.2"), ("bad2", "A 127.0.0.4")]),
        "four.example": mx("four.example", [("grey", "A 127.0.0.5"), ("good", "A 127.0.0.1")]),
        "grey.example": mx("grey.example", [("grey", "A 127.0.0.5")]),
        "greyref.example": mx("greyref.example", [("grey", "A 127.0.0.5"), ("off", "A 127.0.0.3")]),
        "v6.example": mx("v6.example", [("mx6", "AAAA ::1")]),
        "dual.example": mx("dual.example", [("mx", "A 127.0.0.3\nmx AAAA ::1")]),
        "example.com": soa("example.com") + "@ MX 10 mx.example.com.\nmx A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    relay = start_relay(datadir, ["--resolver", knot.resolver, "--smtp-port", str(port),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h"])
    servers.append(relay)
    for d in ("refused", "five", "four", "v6", "dual"):
        submit(relay.port, "alice@example.com", ["bob@%s.example" % d], message(d))
    ok = wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == 5 and
                  [e for e in events(relay) if e["event"] == "delivery"])
    assert ok, "\n".join(str((e["event"], e.get("rcpt"), e["reply"])) for e in events(relay))
    by_rcpt = {e["rcpt"]: e for e in ok}
    for d in ("refused", "five", "four"):
        assert by_rcpt["bob@%s.example" % d]["mx"] == "127.0.0.1:%d" % port
    for d in ("v6", "dual"):
        assert by_rcpt["bob@%s.example" % d]["mx"] == "[::1]:%d" % port
        assert by_rcpt["bob@%s.example" % d]["source_ip"] == "::1"
    assert dump_headers(six, b"X-Client-Addr") == ["ipv6:::1", "ipv6:::1"]
    # moving on to the next address is neither a failure nor a suspension
    assert [e for e in events(relay) if e["event"] == "transient"] == []
    assert "suspended" not in relay.output()

    # every MX host greets 5xx: a bounce with the last greeting
    submit(relay.port, "alice@example.com", ["carol@allfive.example"], message("allfive"))
    b = wait_for(lambda: [e for e in events(relay) if e["event"] == "bounce"])
    assert b and b[0]["rcpt"] == "carol@allfive.example" and b[0]["code"] // 100 == 5, b
    # the only MX host greets 4xx: transient, and the site is suspended
    submit(relay.port, "alice@example.com", ["dave@grey.example"], message("grey"))
    t = wait_for(lambda: [e for e in events(relay) if e["event"] == "transient"])
    assert t and t[0]["rcpt"] == "dave@grey.example" and t[0]["code"] // 100 == 4, t
    assert wait_for(lambda: "grey.grey.example:%d suspended" % port in relay.output()), \
        relay.output()
    # 4xx from the first, the second refuses: the 4xx greeting decides (suspension)
    submit(relay.port, "alice@example.com", ["erin@greyref.example"], message("greyref"))
    t = wait_for(lambda: [e for e in events(relay)
                          if e["event"] == "transient" and e["rcpt"] == "erin@greyref.example"])
    assert t and t[0]["code"] // 100 == 4 and t[0]["mx"] == "127.0.0.5:%d" % port, t
    assert wait_for(lambda: "grey.greyref.example,off.greyref.example:%d suspended" % port
                    in relay.output()), relay.output()
    stop_clean(relay)


def mx_zone(origin, hosts):
    """hosts: [(preference, name, "A 127.0.0.x"), ...]"""
    z = soa(origin)
    for pref, name, rr in hosts:
        z += "@ MX %d %s\n%s %s\n" % (pref, name, name, rr)
    return z


def test_equal_preference_mx_hosts_are_shuffled(datadir, servers):
    """RFC 5321 5.1: two MX hosts of preference 10 both get mail across 20
    connections (one message each); the preference-20 host, which accepts
    too, never does. With the DNS order kept, one host would get all 20
    (the chance that a fair shuffle gives either host fewer than 2 is
    about 4 in 100,000)."""
    from conftest import free_port
    from relay_peers import start_sink_at
    port = free_port()
    for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1"):
        servers.append(start_sink_at(datadir, host, port))
    zones = {
        "eq.example": mx_zone("eq.example", [(10, "a", "A 127.0.0.2"), (10, "b", "A 127.0.0.3"),
                                             (20, "c", "A 127.0.0.4")]),
        "example.com": soa("example.com") + "@ MX 10 mx.example.com.\nmx A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    relay = start_relay(datadir, ["--resolver", knot.resolver, "--smtp-port", str(port),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1h",
                                  "--msgs-per-conn", "1", "--conn-limit", "2"])
    servers.append(relay)
    n = 20
    for i in range(n):
        submit(relay.port, "alice@example.com", ["bob%d@eq.example" % i], message("eq%d" % i))
    ok = wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == n and
                  [e for e in events(relay) if e["event"] == "delivery"], timeout=60)
    assert ok, "\n".join(str((e["event"], e.get("rcpt"), e["reply"])) for e in events(relay))
    by_mx = {}
    for e in ok:
        by_mx[e["mx"]] = by_mx.get(e["mx"], 0) + 1
    assert by_mx.get("127.0.0.4:%d" % port) is None, by_mx
    assert by_mx.get("127.0.0.2:%d" % port, 0) >= 2, by_mx
    assert by_mx.get("127.0.0.3:%d" % port, 0) >= 2, by_mx
    assert sum(by_mx.values()) == n
    stop_clean(relay)


def start_dead_first_mx(datadir, servers, extra=()):
    """dead.example's first MX (127.0.0.3) refuses, its second (127.0.0.1)
    is a sink; alldead.example has only the refusing one. Returns the relay
    (one message per connection, --debug) and the sink's port."""
    from conftest import free_port
    from relay_peers import start_sink_at
    port = free_port()
    servers.append(start_sink_at(datadir, "127.0.0.1", port))
    zones = {
        "dead.example": mx_zone("dead.example", [(10, "mx1", "A 127.0.0.3"),
                                                 (20, "mx2", "A 127.0.0.1")]),
        "alldead.example": mx_zone("alldead.example", [(10, "mx1", "A 127.0.0.3")]),
        "example.com": soa("example.com") + "@ MX 10 mx.example.com.\nmx A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    relay = start_relay(datadir, ["--resolver", knot.resolver, "--smtp-port", str(port),
                                  "--trusted", "127.0.0.1", "--retry-schedule", "1s",
                                  "--msgs-per-conn", "1", "--debug"] + list(extra))
    servers.append(relay)
    return relay, port


def test_dead_address_is_skipped_by_later_connections(datadir, servers):
    """The first MX refuses (nothing listens on 127.0.0.3): the first
    connection fails over to the second MX and logs it; the next five
    connections (one message each) go straight to the second MX. A site
    whose only address is dead is still tried (every attempt reports the
    refusal, none is dropped as 'no address')."""
    relay, port = start_dead_first_mx(datadir, servers)

    def delivered():
        return [e for e in events(relay) if e["event"] == "delivery"]
    for i in range(6):
        submit(relay.port, "alice@example.com", ["bob%d@dead.example" % i], message("d%d" % i))
        assert wait_for(lambda: len(delivered()) == i + 1), relay.output()
    assert all(e["mx"] == "127.0.0.1:%d" % port for e in delivered()), delivered()
    failover = "127.0.0.3:%d: 000 connection refused; trying the next address" % port
    assert relay.output().count(failover) == 1, relay.output()
    assert relay.output().count("127.0.0.3:%d: skipped" % port) == 5, relay.output()
    assert [e for e in events(relay) if e["event"] == "transient"] == []

    # all addresses dead: tried anyway, and each retry reports the refusal
    submit(relay.port, "alice@example.com", ["carol@alldead.example"], message("alldead"))
    t = wait_for(lambda: len([e for e in events(relay) if e["event"] == "transient"]) >= 2 and
                 [e for e in events(relay) if e["event"] == "transient"])
    assert t, relay.output()
    assert all(e["rcpt"] == "carol@alldead.example" and e["reply"] == "000 connection refused" and
               e["mx"] == "127.0.0.3:%d" % port for e in t), t
    stop_clean(relay)


def test_dead_time_zero_remembers_nothing(datadir, servers):
    """--dead-time 0s turns the memory off: every connection tries the
    refusing first MX again before failing over."""
    relay, port = start_dead_first_mx(datadir, servers, ["--dead-time", "0s"])

    def delivered():
        return [e for e in events(relay) if e["event"] == "delivery"]
    for i in range(3):
        submit(relay.port, "alice@example.com", ["bob%d@dead.example" % i], message("z%d" % i))
        assert wait_for(lambda: len(delivered()) == i + 1), relay.output()
    failover = "127.0.0.3:%d: 000 connection refused; trying the next address" % port
    assert relay.output().count(failover) == 3, relay.output()
    assert "127.0.0.3:%d: skipped" % port not in relay.output(), relay.output()
    stop_clean(relay)


def test_static_route_to_a_host_name(datadir, servers):
    """--route DOMAIN=NAME:PORT resolves NAME through --resolver (A, and
    AAAA to ::1 for the second route); a name that does not exist defers
    the mail (451 4.4.4), never bounces it."""
    from relay_peers import start_sink_at
    sink = start_sink(datadir)
    servers.append(sink)
    six = start_sink_at(datadir, "::1", sink.port)
    servers.append(six)
    zones = {"hop.example": soa("hop.example") + "mx A 127.0.0.1\nmx6 AAAA ::1\n"}
    knot = start_knot(datadir, zones)
    servers.append(knot)
    relay = start_relay(datadir, [
        "--resolver", knot.resolver, "--trusted", "127.0.0.1", "--retry-schedule", "1h",
        "--route", "dest.example=MX.hop.example:%d" % sink.port,
        "--route", "six.example=mx6.hop.example:%d" % sink.port,
        "--route", "gone.example=nowhere.hop.example:%d" % sink.port])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@dest.example"], message("named"))
    submit(relay.port, "alice@example.com", ["dave@six.example"], message("six"))
    submit(relay.port, "alice@example.com", ["carol@gone.example"], message("gone"))
    ok = wait_for(lambda: len([e for e in events(relay) if e["event"] == "delivery"]) == 2 and
                  [e for e in events(relay) if e["event"] == "delivery"])
    assert ok, relay.output()
    mx = {e["rcpt"]: e["mx"] for e in ok}
    assert mx == {"bob@dest.example": "127.0.0.1:%d" % sink.port,
                  "dave@six.example": "[::1]:%d" % sink.port}, mx
    t = wait_for(lambda: [e for e in events(relay) if e["event"] == "transient"])
    assert t and t[0]["rcpt"] == "carol@gone.example" and t[0]["code"] == 451 and \
        "4.4.4" in t[0]["reply"], t
    assert [e for e in events(relay) if e["event"] == "bounce"] == []
    stop_clean(relay)


def test_host_name_route_needs_a_resolver(datadir):
    import subprocess
    from conftest import MAILREP, free_port
    base = [MAILREP, "relay", "--listen", "127.0.0.1:%d" % free_port(),
            "--spool", datadir + "/spool", "--trusted", "127.0.0.1"]
    r = subprocess.run(base + ["--route", "dest.example=mx.hop.example:25"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "mx.hop.example" in r.stderr and "--resolver" in r.stderr, r
    for bad in ("-mx.example:25", "mx..example:25", "mx.example:0", "mx.example:99999",
                "1.2.3.999:25", "mx_1.example:25", "mx.example:"):
        r = subprocess.run(base + ["--resolver", "127.0.0.1:53", "--route", "d.example=" + bad],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "route 'd.example=%s'" % bad in r.stderr, (bad, r.stderr)
