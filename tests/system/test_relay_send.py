"""`mailrep send`, the sendmail-like injection client, end to end: straight
to smtp-sink, and through a relay with STARTTLS and AUTH (the server taken
from the config's [relay] listen). Exit codes: 0 accepted, 75 temporary
(4xx, no connection), 69 permanent (5xx), 2 usage."""
import os
import subprocess

from conftest import MAILREP, datadir, free_port, servers  # noqa: F401 (fixtures)
from relay_tls_util import make_cert, write_config
from relay_util import events, sink_files, start_relay, start_sink, stop_clean, wait_for

MSG = (b"From: Alice <alice@example.com>\n"
       b"To: Bob <bob@dest.example>, carol@dest.example\n"
       b"Bcc: secret@dest.example\n"
       b"Subject: sent\n"
       b"\n"
       b"Hello,\n.a line that starts with a dot\n..two dots\nbye\n")


def send(args, data=MSG):
    p = subprocess.run([MAILREP, "send"] + list(args), input=data, capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def test_send_to_smtp_sink(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    code, out = send(["--server", sink.hop, "-f", "alice@example.com", "bob@dest.example"])
    assert code == 0, out
    assert wait_for(lambda: [f for f in sink_files(sink) if f.endswith(b"bye\n\n")])
    f = sink_files(sink)[0]
    assert b"X-Mail-Args: <alice@example.com>" in f
    assert b"X-Rcpt-Args: <bob@dest.example>" in f
    # dot-stuffed on the way and unstuffed by the receiver: the lines are intact
    # (smtp-sink writes its dump with LF line ends)
    assert b"\n.a line that starts with a dot\n..two dots\nbye\n" in f, f


def test_send_dash_t_takes_header_recipients_and_drops_bcc(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    code, out = send(["--server", sink.hop, "-t", "-f", "alice@example.com"])
    assert code == 0, out
    assert wait_for(lambda: [f for f in sink_files(sink) if f.endswith(b"bye\n\n")])
    f = sink_files(sink)[0]
    for r in (b"bob@dest.example", b"carol@dest.example", b"secret@dest.example"):
        assert b"X-Rcpt-Args: <" + r + b">" in f, f
    assert b"Bcc:" not in f and b"secret@dest.example" not in f.split(b"\n\n", 1)[1]


def test_send_through_relay_with_tls_and_auth(datadir, servers):
    sink = start_sink(datadir)
    servers.append(sink)
    cert, key = make_cert(datadir)
    port = free_port()
    cfg = write_config(datadir, {"acme": {"password": "pw-acme", "per-hour": 2}},
                       relay=[("listen", "127.0.0.1:%d" % port)])
    relay = start_relay(datadir, ["-c", cfg, "--route", "*=" + sink.hop, "--tls-cert", cert,
                                  "--tls-key", key], port=port)
    servers.append(relay)
    pw = os.path.join(datadir, "pw")
    with open(pw, "w") as f:
        f.write("pw-acme\n")
    base = ["-c", cfg, "--tls", "--user", "acme", "--password-file", pw, "-f",
            "alice@example.com"]
    code, out = send(base + ["bob@dest.example"])
    assert code == 0 and "queued as" in out, out
    assert wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"])
    rec = [e for e in events(relay) if e["event"] == "reception"][0]
    assert rec["account"] == "acme" and rec["tls"] is True
    # over the hourly limit: temporary, 75, and the reply is shown
    code, out = send(base + ["a@dest.example", "b@dest.example"])
    assert code == 75 and "452 4.7.1" in out and "hourly limit" in out, (code, out)
    # a wrong password: permanent, 69
    with open(pw, "w") as f:
        f.write("wrong\n")
    code, out = send(base + ["bob@dest.example"])
    assert code == 69 and "535 5.7.8" in out, (code, out)
    # without --tls the relay refuses AUTH before TLS: 538 is permanent
    code, out = send([a for a in base if a != "--tls"] + ["bob@dest.example"])
    assert code == 69 and "538 5.7.11" in out, (code, out)
    # --tls towards a server without STARTTLS fails rather than going on in plain text
    code, out = send(["--server", sink.hop, "--tls", "-f", "a@example.com", "b@dest.example"])
    assert code == 75 and "STARTTLS" in out, (code, out)
    stop_clean(relay)


def test_send_exit_codes_for_usage_and_no_server(datadir):
    code, out = send(["bob@dest.example"])
    assert code == 2 and "-f SENDER" in out
    code, out = send(["--server", "127.0.0.1:%d" % free_port(), "-f", "a@example.com",
                      "b@dest.example"])
    assert code == 75 and "connect" in out, (code, out)
    code, out = send(["--server", "127.0.0.1:1", "-f", "a@example.com"])
    assert code == 2 and "no recipient" in out
