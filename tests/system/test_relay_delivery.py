"""mailrep relay end to end: mail submitted by a trusted client is signed
with DKIM at reception (the signature verifies through a knotd zone),
spooled, and delivered to Postfix's smtp-sink with all recipients of a
domain in one transaction and dot-stuffing intact; the accounting log has
one line per event."""
import os
import subprocess

from conftest import MAILREP, datadir, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_util import stop_clean, events, message, sink_files, start_relay, start_sink, submit, wait_for


def keygen(datadir, sel, domain):
    key = os.path.join(datadir, sel + ".pem")
    p = subprocess.run([MAILREP, "dkim", "keygen", "--type", "ed25519", "--selector", sel,
                        "--domain", domain, "--out", key], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return key, p.stdout.decode()


def delivered(relay):
    return [e for e in events(relay) if e["event"] == "delivery"]


def test_delivered_signed_and_accounted(datadir, servers):
    key, rec = keygen(datadir, "s1", "example.com")
    knot = start_knot(datadir, {"example.com": soa("example.com") + rec})
    servers.append(knot)
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.0/8",
                                  "--dkim-key", "example.com=s1:" + key])
    servers.append(relay)
    qid = submit(relay.port, "alice@example.com", ["bob@dest.example", "carol@dest.example"],
                 message("signed"))
    # smtp-sink creates the dump file before the data is in it: read it
    # once the relay has logged the delivery (after the sink's final 250)
    files = wait_for(lambda: delivered(relay) and sink_files(sink))
    assert len(files) == 1, files
    dump = files[0]
    # both recipients in one transaction, from the original sender
    assert dump.count(b"X-Rcpt-Args:") == 2
    assert b"X-Mail-Args: <alice@example.com>" in dump
    msg = dump[dump.index(b"DKIM-Signature:"):]
    assert b"d=example.com" in msg and b"s=s1" in msg.split(b"\r\n\r\n")[0]
    assert b"\n.a line starting with a dot\n" in msg  # stuffed and unstuffed again
    assert ("id %s;" % qid).encode() in msg
    p = subprocess.run([MAILREP, "dkim", "verify", "--resolver", knot.resolver], input=msg,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(b"dkim=pass d=example.com s=s1")

    ev = wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"] and events(relay))
    kinds = [(e["event"], e.get("rcpt")) for e in ev]
    assert kinds[0] == ("reception", None)
    assert sorted(kinds[1:]) == [("delivery", "bob@dest.example"), ("delivery", "carol@dest.example")]
    for e in ev:
        assert e["id"] == qid and e["source_ip"] == "127.0.0.1"
    d = ev[1]
    assert d["mx"] == sink.hop and d["code"] == 250 and d["attempts"] == 1
    for field in ("account", "pool", "reply", "enhanced", "category", "tls"):
        assert field in d
    stop_clean(relay)


def test_tampering_is_caught(datadir, servers):
    """The verification above can fail: a relayed message changed after
    signing does not verify."""
    key, rec = keygen(datadir, "s2", "example.com")
    knot = start_knot(datadir, {"example.com": soa("example.com") + rec})
    servers.append(knot)
    sink = start_sink(datadir)
    servers.append(sink)
    relay = start_relay(datadir, ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1",
                                  "--dkim-key", "example.com=s2:" + key])
    servers.append(relay)
    submit(relay.port, "alice@example.com", ["bob@dest.example"], message("tamper"))
    # smtp-sink creates the dump file before the data is in it: read it
    # once the relay has logged the delivery (after the sink's final 250)
    files = wait_for(lambda: delivered(relay) and sink_files(sink))
    msg = files[0][files[0].index(b"DKIM-Signature:"):].replace(b"bye", b"BYE")
    p = subprocess.run([MAILREP, "dkim", "verify", "--resolver", knot.resolver], input=msg,
                       capture_output=True, timeout=30)
    assert p.returncode == 1 and b"dkim=fail" in p.stdout
