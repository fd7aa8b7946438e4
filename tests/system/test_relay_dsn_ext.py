"""mailrep relay and the DSN extension (RFC 3461), against smtp-sink:
NOTIFY decides who gets a DSN (NEVER, a list without FAILURE, the default);
ENVID and ORCPT come back in the DSN; RET=FULL returns the message and
RET=HDRS its header section; malformed parameters get 501 naming them; a
next hop that offers DSN gets the parameters (smtp-sink dumps the MAIL and
RCPT arguments it received as X-Mail-Args and X-Rcpt-Args), one that does
not (smtp-sink -N) makes the relay send the `relayed` notice itself; with
--delay-warning a deferred recipient gets one `delayed` notice, kept on
disk across a restart, and none when its NOTIFY leaves DELAY out.

The client is Python's smtplib: it sends per-recipient ESMTP parameters,
which the packaged swaks (20201014) cannot. Retry delays are seconds here
(--retry-schedule 1s); nothing waits for minutes."""
import smtplib
import time

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_util import events, message, sink_files, start_relay, start_sink, stop_clean, wait_for


def of(relay, kind):
    return [e for e in events(relay) if e["event"] == kind]


def send(port, sender, rcpts, data, mail_opts=()):
    """rcpts: (address, [ESMTP parameters]) pairs; returns the queue id."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        code, msg = s.mail(sender, list(mail_opts))
        assert code == 250, msg
        for addr, opts in rcpts:
            code, msg = s.rcpt(addr, list(opts))
            assert code == 250, (addr, code, msg)
        code, msg = s.data(data.encode())
        assert code == 250, (code, msg)
        return msg.decode().split("queued as ")[1].strip()
    finally:
        s.quit()


def blocks(text):
    """The per-recipient blocks of a DSN's delivery-status part (smtp-sink's
    dumps end lines with LF)."""
    text = text.replace(b"\r\n", b"\n")
    part = text.split(b"Content-Type: message/delivery-status", 1)[1].split(b"\n--", 1)[0]
    return [b for b in part.split(b"\n\n") if b"Final-Recipient:" in b]


def final_rcpts(text):
    return [b.split(b"Final-Recipient: rfc822; ")[1].split(b"\n")[0].decode()
            for b in blocks(text)]


def dsns(sink):
    """The DSNs a sink received (from the null sender)."""
    return [f for f in sink_files(sink) if b"X-Mail-Args: <>" in f]


def relays(datadir, servers, hops, extra=()):
    """A relay routing dest.example to hops["dest"] and the senders' domain
    example.com (where DSNs go) to hops["home"]."""
    args = ["--route", "dest.example=" + hops["dest"], "--route", "example.com=" + hops["home"],
            "--trusted", "127.0.0.1", "--retry-schedule", "1s"] + list(extra)
    r = start_relay(datadir, args)
    servers.append(r)
    return r


def test_notify_never_and_failure_less_lists_get_no_dsn(datadir, servers):
    bad = start_sink(datadir, ["-f", "RCPT"])  # refuses every recipient with a 5xx
    home = start_sink(datadir)
    servers += [bad, home]
    relay = relays(datadir, servers, {"dest": bad.hop, "home": home.hop})
    qid = send(relay.port, "alice@example.com",
               [("bob@dest.example", ["NOTIFY=NEVER"]),
                ("carol@dest.example", []),  # the default: FAILURE
                ("dave@dest.example", ["NOTIFY=SUCCESS,DELAY"]),
                ("erin@dest.example", ["notify=failure"])],
               message("never"))
    assert wait_for(lambda: len(of(relay, "bounce")) == 4)
    assert wait_for(lambda: dsns(home))
    time.sleep(1.5)  # a second DSN would have come by now
    got = dsns(home)
    assert len(got) == 1, got
    assert final_rcpts(got[0]) == ["carol@dest.example", "erin@dest.example"]
    assert b"X-Mailrep-Queue-ID: " + qid.encode() in got[0]
    stop_clean(relay)
    # the final states are on disk: a restart sends nothing more
    relay2 = relays(datadir, servers, {"dest": bad.hop, "home": home.hop})
    time.sleep(2.0)
    assert len(dsns(home)) == 1
    assert not [e for e in of(relay2, "bounce") if e["id"] == qid][4:]
    stop_clean(relay2)


def test_envid_orcpt_and_ret(datadir, servers):
    bad = start_sink(datadir, ["-f", "RCPT"])
    home = start_sink(datadir)
    servers += [bad, home]
    relay = relays(datadir, servers, {"dest": bad.hop, "home": home.hop})
    # xtext: "+2B" is '+', "+3D" '=', "+40" '@'
    send(relay.port, "alice@example.com",
         [("bob@dest.example", ["ORCPT=rfc822;Bob+2BList+40example.org"]),
          ("carol@dest.example", [])],
         message("full"), ["RET=FULL", "ENVID=campaign+3D42"])
    assert wait_for(lambda: len(dsns(home)) == 1)
    text = dsns(home)[0].replace(b"\r\n", b"\n")
    assert b"Original-Envelope-Id: campaign=42\n" in text
    b = blocks(text)
    assert b"Original-Recipient: rfc822;Bob+List@example.org\n" in b[0]
    assert b"Original-Recipient" not in b[1]
    # RET=FULL: the whole message, body included
    assert b"Content-Type: message/rfc822" in text and b"text/rfc822-headers" not in text
    assert b"Message-ID: <full@example.com>" in text and b"Hello Bob," in text
    assert b"bye\n" in text

    send(relay.port, "alice@example.com", [("dave@dest.example", [])], message("hdrs"),
         ["RET=HDRS"])
    assert wait_for(lambda: len(dsns(home)) == 2)
    text = [t for t in dsns(home) if b"<hdrs@example.com>" in t][0]
    assert b"Content-Type: text/rfc822-headers" in text and b"message/rfc822" not in text
    assert b"Hello Bob," not in text and b"Original-Envelope-Id" not in text

    # without RET, as before: the header section only
    send(relay.port, "alice@example.com", [("erin@dest.example", [])], message("plain"))
    assert wait_for(lambda: len(dsns(home)) == 3)
    text = [t for t in dsns(home) if b"<plain@example.com>" in t][0]
    assert b"text/rfc822-headers" in text and b"Hello Bob," not in text
    stop_clean(relay)


def test_bad_parameters_get_501_naming_them(datadir, servers):
    home = start_sink(datadir)
    servers.append(home)
    relay = relays(datadir, servers, {"dest": home.hop, "home": home.hop})

    def session():  # ten errors close a session: a new one for every few
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        return s

    s = session()
    bad_mail = [
        ("RET=FOO", b"RET"),
        ("RET=FULL RET=HDRS", b"RET parameter given twice"),
        ("RET", b"RET"),
        ("ENVID=" + "x" * 101, b"ENVID parameter longer than 100"),
        ("ENVID=a+zz", b"ENVID parameter is not valid xtext"),
        ("ENVID=a+0A", b"ENVID"),  # a line feed once decoded
        ("ENVID=a=b", b"ENVID"),
        ("ENVID=a ENVID=b", b"ENVID parameter given twice"),
    ]
    for params, text in bad_mail:
        code, msg = s.docmd("MAIL FROM:<alice@example.com> " + params)
        assert code == 501 and msg.startswith(b"5.5.4") and text in msg, (params, code, msg)
    s.quit()
    s = session()
    code, msg = s.docmd("MAIL FROM:<alice@example.com> RET=hdrs ENVID=ok BODY=8BITMIME")
    assert code == 250, msg
    bad_rcpt = [
        ("NOTIFY=NEVER,SUCCESS", b"NEVER cannot be combined"),
        ("NOTIFY=BOGUS", b"NOTIFY"),
        ("NOTIFY=", b"NOTIFY"),
        ("NOTIFY=SUCCESS,,FAILURE", b"NOTIFY"),
        ("NOTIFY=DELAY,DELAY", b"NOTIFY parameter names a keyword twice"),
        ("NOTIFY=SUCCESS NOTIFY=FAILURE", b"NOTIFY parameter given twice"),
        ("ORCPT=bob@x.example", b"ORCPT parameter must be addr-type;address"),
        ("ORCPT=rfc822;", b"ORCPT"),
        ("ORCPT=rf(c;a", b"ORCPT parameter: bad address type"),
        ("ORCPT=rfc822;a+0D+0Ab", b"ORCPT parameter: the address is not valid xtext"),
        ("ORCPT=rfc822;a ORCPT=rfc822;b", b"ORCPT parameter given twice"),
        ("ORCPT=rfc822;" + "a" * 494, b"ORCPT parameter longer than 500"),
    ]
    for i, (params, text) in enumerate(bad_rcpt):
        if i == 6:
            s.quit()
            s = session()
            assert s.docmd("MAIL FROM:<alice@example.com>")[0] == 250
        code, msg = s.docmd("RCPT TO:<bob@dest.example> " + params)
        assert code == 501 and msg.startswith(b"5.5.4") and text in msg, (params, code, msg)
    code, msg = s.docmd("RCPT TO:<bob@dest.example> NOTIFY=success,failure,delay "
                        "ORCPT=rfc822;bob+40dest.example")
    assert code == 250, msg
    s.quit()
    stop_clean(relay)


def test_parameters_pass_to_a_next_hop_with_dsn(datadir, servers):
    dest = start_sink(datadir)  # smtp-sink offers DSN
    home = start_sink(datadir)
    servers += [dest, home]
    relay = relays(datadir, servers, {"dest": dest.hop, "home": home.hop})
    send(relay.port, "alice@example.com",
         [("bob@dest.example", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+2Bx+40dest.example"]),
          ("carol@dest.example", [])],
         message("passed"), ["RET=HDRS", "ENVID=id+2B7+20x"])
    # the 250 after the dot comes once smtp-sink has written its whole dump
    assert wait_for(lambda: len(of(relay, "delivery")) == 2)
    got = sink_files(dest)
    assert len(got) == 1
    text = got[0].replace(b"\r\n", b"\n")
    mail = text.split(b"X-Mail-Args: ")[1].split(b"\n")[0]
    assert mail.startswith(b"<alice@example.com>") and b" RET=HDRS ENVID=id+2B7+20x" in mail
    rcpt = [r.split(b"\n")[0] for r in text.split(b"X-Rcpt-Args: ")[1:]]
    # encoded again, minimally: '+' as +2B, '@' as it is
    assert rcpt == [b"<bob@dest.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@dest.example",
                    b"<carol@dest.example>"], rcpt
    # the next hop reports success itself: no notice from the relay
    assert wait_for(lambda: len(of(relay, "delivery")) == 2)
    time.sleep(1.0)
    assert dsns(home) == []
    # mail without parameters goes out as before
    send(relay.port, "alice@example.com", [("dave@dest.example", [])], message("none"))
    # (smtp-sink writes a dump file as it reads: wait for the whole message)
    assert wait_for(lambda: any(b"<none@example.com>" in f for f in sink_files(dest)))
    plain = [f for f in sink_files(dest) if b"<none@example.com>" in f][0]
    assert b"RET=" not in plain and b"ENVID=" not in plain and b"NOTIFY=" not in plain
    stop_clean(relay)


def test_relayed_notice_for_a_next_hop_without_dsn(datadir, servers):
    dest = start_sink(datadir, ["-N"])  # does not announce DSN
    home = start_sink(datadir)
    servers += [dest, home]
    relay = relays(datadir, servers, {"dest": dest.hop, "home": home.hop})
    qid = send(relay.port, "alice@example.com",
               [("bob@dest.example", ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob+40dest.example"]),
                ("carol@dest.example", []),
                ("dave@dest.example", ["NOTIFY=SUCCESS,FAILURE"])],
               message("relayed"), ["ENVID=c7"])
    assert wait_for(lambda: {e["rcpt"] for e in of(relay, "delivery")} >= {
        "bob@dest.example", "carol@dest.example", "dave@dest.example"})
    got = sink_files(dest)
    text = got[0]
    assert b"NOTIFY=" not in text and b"ORCPT=" not in text and b"ENVID=" not in text
    assert wait_for(lambda: dsns(home))
    time.sleep(1.0)
    notes = dsns(home)
    assert len(notes) == 1, notes
    note = notes[0].replace(b"\r\n", b"\n")
    assert b"Subject: Successful Mail Delivery Report" in note
    assert final_rcpts(note) == ["bob@dest.example", "dave@dest.example"]
    for b in blocks(note):
        assert b"Action: relayed\n" in b and b"Status: 2." in b
    assert b"Original-Recipient: rfc822;bob@dest.example" in blocks(note)[0]
    assert b"Original-Envelope-Id: c7" in note
    assert b"X-Mailrep-Queue-ID: " + qid.encode() in note
    assert b"X-Rcpt-Args: <alice@example.com>" in note
    stop_clean(relay)


def test_delay_warning_once_across_a_restart(datadir, servers):
    grey = start_sink(datadir, ["-r", "RCPT"])  # defers every recipient with a 4xx
    home = start_sink(datadir)
    servers += [grey, home]
    hops = {"dest": grey.hop, "home": home.hop}
    extra = ["--delay-warning", "2s"]
    relay = relays(datadir, servers, hops, extra)
    t0 = time.time()
    qid = send(relay.port, "alice@example.com",
               [("bob@dest.example", []),  # the default includes DELAY once it is on
                ("carol@dest.example", ["NOTIFY=FAILURE"]),
                ("dave@dest.example", ["NOTIFY=DELAY", "ORCPT=rfc822;d+40dest.example"])],
               message("slow"))
    assert wait_for(lambda: dsns(home), timeout=20)
    # not at the first deferral: the relay's clock counts whole seconds
    assert time.time() - t0 > 1.0
    assert len([e for e in of(relay, "transient") if e["rcpt"] == "bob@dest.example"]) >= 2
    # several more deferrals, no second notice
    n = len(of(relay, "transient"))
    assert wait_for(lambda: len(of(relay, "transient")) >= n + 6, timeout=20)
    notes = dsns(home)
    assert len(notes) == 1, notes
    note = notes[0].replace(b"\r\n", b"\n")
    assert b"Subject: Delayed Mail (still being retried)" in note
    assert final_rcpts(note) == ["bob@dest.example", "dave@dest.example"]
    for b in blocks(note):
        assert b"Action: delayed\n" in b and b"Status: 4." in b and b"Will-Retry-Until: " in b
    assert b"Original-Recipient: rfc822;d@dest.example" in blocks(note)[1]
    assert b"X-Mailrep-Queue-ID: " + qid.encode() in note
    assert b"text/rfc822-headers" in note and b"Message-ID: <slow@example.com>" in note
    stop_clean(relay)
    # the warnings are on disk: after a restart the deferrals go on, silently
    relay2 = relays(datadir, servers, hops, extra)
    assert wait_for(lambda: len([e for e in of(relay2, "transient") if e["id"] == qid])
                    >= n + 12, timeout=20)
    assert len(dsns(home)) == 1
    stop_clean(relay2)


def test_no_delay_warning_when_off(datadir, servers):
    grey = start_sink(datadir, ["-r", "RCPT"])
    home = start_sink(datadir)
    servers += [grey, home]
    relay = relays(datadir, servers, {"dest": grey.hop, "home": home.hop})
    send(relay.port, "alice@example.com", [("bob@dest.example", ["NOTIFY=DELAY,FAILURE"])],
         message("off"))
    assert wait_for(lambda: len(of(relay, "transient")) >= 4, timeout=20)
    assert dsns(home) == []
    stop_clean(relay)


def test_delay_warning_kept_through_kill_9(datadir, servers):
    """A kill -9 once the notice is out and its commit done (a second goes
    by) does not bring it back: the flag was synced with it. (A kill -9
    before that commit may send it again: at least once.)"""
    import signal
    grey = start_sink(datadir, ["-r", "RCPT"])
    home = start_sink(datadir)
    servers += [grey, home]
    hops = {"dest": grey.hop, "home": home.hop}
    extra = ["--delay-warning", "1s"]
    relay = relays(datadir, servers, hops, extra)
    qid = send(relay.port, "alice@example.com", [("bob@dest.example", [])], message("killed"))
    assert wait_for(lambda: dsns(home), timeout=20)
    time.sleep(1.0)
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait()
    relay.log.close()
    servers.remove(relay)
    n = len([e for e in events(relay) if e["event"] == "transient" and e["id"] == qid])
    relay2 = relays(datadir, servers, hops, extra)
    assert wait_for(lambda: len([e for e in of(relay2, "transient") if e["id"] == qid]) >= n + 3,
                    timeout=20)
    assert len(dsns(home)) == 1
    stop_clean(relay2)
