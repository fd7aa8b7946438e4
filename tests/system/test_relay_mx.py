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
