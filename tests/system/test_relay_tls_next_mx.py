"""When TLS is required and the preferred MX host offers no STARTTLS, mailrep
relay tries the next MX host instead of deferring at once (as Postfix does
under "encrypt"). knotd serves dest.example with MX 10 at 127.0.0.2, an
smtp-sink without STARTTLS, and MX 20 at 127.0.0.1, a second mailrep relay
with a certificate from a private CA; both on one port. Under
--tls-policy required (and verify) the mail goes to the second host over
TLS; with opportunistic TLS, the control, it goes to the first in plain
text; with only the plain host, required defers with 4.7.5. The host without
STARTTLS is remembered: the next message under required goes straight to
the second host."""
from conftest import datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_util import events, message, sink_files, start_relay, stop_clean, submit, wait_for
from test_relay_mta_sts import make_ca, receiver

ZONE = soa("dest.example") + ("@ MX 10 mx1\n@ MX 20 mx2\nmx1 A 127.0.0.2\nmx2 A 127.0.0.1\n")
LONE = soa("lone.example") + "@ MX 10 mx1\nmx1 A 127.0.0.2\n"


def run(datadir, servers, name, policy):
    ca, sign = make_ca(datadir)
    b, bsink, plain = receiver(datadir, servers, sign, ["mx2.dest.example"])
    knot = start_knot(datadir, {"dest.example": ZONE, "lone.example": LONE})
    servers.append(knot)
    extra = ["--tls-policy", "dest.example=" + policy,
             "--tls-policy", "lone.example=required"] if policy else []
    a = start_relay(datadir, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                              "--smtp-port", str(b.port), "--retry-schedule", "1h",
                              "--msgs-per-conn", "1",  # no connection is reused
                              "--tls-ca", ca] + extra, name="a-" + name)
    servers.append(a)
    submit(a.port, "alice@example.com", ["bob@dest.example"], data=message(name))
    assert wait_for(lambda: any(e["event"] in ("delivery", "transient") and
                                e["rcpt"] == "bob@dest.example" for e in events(a))), a.output()
    return a, bsink, plain


def outcome(a, rcpt):
    return [e for e in events(a) if e.get("rcpt") == rcpt and e["event"] != "reception"]


def test_required_moves_past_an_mx_without_starttls(datadir, servers):
    a, bsink, plain = run(datadir, servers, "required", "required")
    [ev] = outcome(a, "bob@dest.example")
    assert ev["event"] == "delivery" and ev["tls"] is True, ev
    assert wait_for(lambda: any(b"required" in f for f in sink_files(bsink)))
    assert sink_files(plain) == []
    assert "STARTTLS not available" in a.output() and "trying the next address" in a.output()
    # remembered for --dead-time: the next message goes straight to the second host
    submit(a.port, "alice@example.com", ["bob2@dest.example"], data=message("again"))
    assert wait_for(lambda: outcome(a, "bob2@dest.example")), a.output()
    [ev] = outcome(a, "bob2@dest.example")
    assert ev["event"] == "delivery" and ev["tls"] is True, ev
    assert a.output().count("trying the next address") == 1, a.output()
    # a site whose only host offers no STARTTLS: deferred, nothing sent in plain text
    submit(a.port, "alice@example.com", ["carol@lone.example"], data=message("lone"))
    assert wait_for(lambda: outcome(a, "carol@lone.example")), a.output()
    [ev] = outcome(a, "carol@lone.example")
    assert ev["event"] == "transient" and ev["reply"].startswith("451 4.7.5"), ev
    assert sink_files(plain) == []
    stop_clean(a)


def test_verify_moves_past_an_mx_without_starttls(datadir, servers):
    a, bsink, plain = run(datadir, servers, "verify", "verify")
    [ev] = outcome(a, "bob@dest.example")
    assert ev["event"] == "delivery" and ev["tls"] is True, ev
    assert sink_files(plain) == []
    stop_clean(a)


def test_opportunistic_stays_with_the_first_mx(datadir, servers):
    a, bsink, plain = run(datadir, servers, "opportunistic", None)
    [ev] = outcome(a, "bob@dest.example")
    assert ev["event"] == "delivery" and ev["tls"] is False, ev
    assert wait_for(lambda: any(b"opportunistic" in f for f in sink_files(plain)))
    stop_clean(a)
