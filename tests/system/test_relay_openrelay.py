"""mailrep relay is never an open relay: with no --trusted network (the
default), or from a client outside it, every recipient is refused
whatever the trick; from a trusted client, addresses that would need a
second routing step (%-hack, source routes, quoted local parts with '@',
user@a@b, bang paths) are refused too. Nothing reaches the sink."""
import smtplib
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_util import events, sink_files, start_relay, start_sink

TRICKS = [
    "victim@elsewhere.example",
    "victim%elsewhere.example@relay.test",
    "@relay.test:victim@elsewhere.example",
    "<@relay.test,@hop.example:victim@elsewhere.example>",
    '"victim@elsewhere.example"@relay.test',
    "victim@elsewhere.example@relay.test",
    "elsewhere.example!victim@relay.test",
    "victim@[127.0.0.1]",
    "victim",
    "postmaster",
]


def try_all(port, sender="spammer@bad.example"):
    codes = []
    for rcpt in TRICKS:
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        s.ehlo("relay.test")  # pretending to be the relay itself
        code, _ = s.mail(sender)
        assert code == 250
        raw = rcpt if rcpt.startswith("<") else "<%s>" % rcpt
        code, msg = s.docmd("RCPT TO:" + raw)
        codes.append((rcpt, code, msg))
        if code != 250:
            dcode, _ = s.docmd("DATA")
            assert dcode == 503  # no recipient: no data
        s.quit()
    return codes


def run_case(datadir, servers, trusted):
    sink = start_sink(datadir)
    servers.append(sink)
    args = ["--route", "*=" + sink.hop]
    for t in trusted:
        args += ["--trusted", t]
    relay = start_relay(datadir, args)
    servers.append(relay)
    codes = try_all(relay.port)
    time.sleep(0.5)
    assert sink_files(sink) == []
    assert [e for e in events(relay) if e["event"] == "reception"] == []
    return codes


def test_nobody_relays_by_default(datadir, servers):
    for rcpt, code, msg in run_case(datadir, servers, []):
        assert code == 554 and b"5.7.1" in msg, (rcpt, code, msg)


def test_client_outside_trusted_networks(datadir, servers):
    for rcpt, code, msg in run_case(datadir, servers, ["10.0.0.0/8", "::1"]):
        assert code == 554 and b"5.7.1" in msg, (rcpt, code, msg)


def test_routing_tricks_refused_for_trusted_clients(datadir, servers):
    codes = run_case(datadir, servers, ["127.0.0.0/8"])
    # the plain address is accepted (proof that the client is trusted) ...
    assert codes[0][1] == 250
    # ... every trick is not, as a syntax or address error
    for rcpt, code, msg in codes[1:]:
        assert code in (501, 553), (rcpt, code, msg)
