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
