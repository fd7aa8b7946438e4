"""SMTP TLS Reporting (RFC 8460) from mailrep relay, end to end on loopback.

knotd serves the recipient domains: their MX, `_smtp._tls` TXT records
asking for reports by mail to tlsrpt@reports.example, and for one domain
an MTA-STS record. The MX hosts are a second relay (B) with STARTTLS and a
CA-signed certificate at 127.0.0.1, and smtp-sink (no STARTTLS) at
127.0.0.2 on the same port (the fixtures of test_relay_mta_sts.py). The
reports go, by --route, to another smtp-sink, whose dumps are read back:
headers, attachment name, and the gzip JSON inside.

The relay's clock is MAILREP_NOW=file:PATH: the sessions happen at noon
of day D, the counters are written a minute later without a restart, and
after a restart the clock is moved past midnight, when the day's reports
are looked up and sent (--tlsrpt-delay 0: at once)."""
import base64
import email
import email.policy
import gzip
import http.server
import json
import os
import pwd
import shutil
import ssl
import subprocess
import threading
import time

from conftest import MAILREP, datadir, free_port, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_util import events, message, sink_files, start_relay, start_sink, stop_clean, \
    submit, wait_for
from test_relay_delivery import keygen
from test_relay_mta_sts import PolicyServer, make_ca, policy, receiver

RUA = '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example"\n'


class ReportServer:
    """HTTPS on 127.0.0.1 recording each POST it takes: (path, headers,
    body); the first `fail` POSTs are answered 503 and only counted in
    `refused`."""

    def __init__(self, cert, key, port=None, fail=0):
        self.posts = []
        self.fail, self.refused = fail, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if outer.refused < outer.fail:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.posts.append((self.path, dict(self.headers), body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = port or free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def show(spool, *args):
    r = subprocess.run([MAILREP, "tlsrpt", "show", "--spool", spool, "--hostname", "relay.test",
                        "--org", "Example ESP", "--contact", "postmaster@esp.example"]
                       + list(args), capture_output=True, text=True)
    return r


def reports(out):
    return {json.loads(line)["policies"][0]["policy"]["policy-domain"]: json.loads(line)
            for line in out.splitlines() if line.strip()}


def test_reports_by_mail_after_midnight(datadir, servers, monkeypatch):
    ca, sign = make_ca(datadir)
    hcert, hkey = sign("https", ["mta-sts.sts.example", "mta-sts.stsbad.example"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    # testing mode, and B's certificate is not for mx.sts.example
    web.policies["mta-sts.sts.example"] = policy("testing", "mx.sts.example")
    web.policies["mta-sts.stsbad.example"] = "version: STSv1\nmode: sometimes\nmax_age: 60\n"
    rcert, rkey = sign("rpt", ["rpt.reports.example"])
    rweb = ReportServer(rcert, rkey)
    servers.append(rweb)
    b, bsink, plain = receiver(datadir, servers, sign, ["mx.ok.example"])
    mx = "@ MX 10 mx\nmx A %s\n"
    key, dkim_rec = keygen(datadir, "s1", "esp.example")
    zones = {
        "req.example": soa("req.example") + mx % "127.0.0.2" + RUA,
        "ok.example": soa("ok.example") + mx % "127.0.0.1" +
        '_smtp._tls TXT "v=TLSRPTv1;rua=mailto:tlsrpt@reports.example?subject=x"\n',
        "sts.example": soa("sts.example") + mx % "127.0.0.1" +
        'mta-sts A 127.0.0.1\n_mta-sts TXT "v=STSv1; id=1;"\n' + RUA,
        # counted, but publishes no record: no report
        "norpt.example": soa("norpt.example") + mx % "127.0.0.2",
        # a broken record: no report, and the log says why
        "bad.example": soa("bad.example") + mx % "127.0.0.2" +
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:nobody"\n',
        # reports by HTTPS POST
        "web.example": soa("web.example") + mx % "127.0.0.2" +
        '_smtp._tls TXT "v=TLSRPTv1; rua=https://rpt.reports.example/v1/tlsrpt"\n',
        "reports.example": soa("reports.example") + "rpt A 127.0.0.1\n",
        # shares ok.example's MX host, and its mail goes with ok.example's
        "ok2.example": soa("ok2.example") + "@ MX 10 mx.ok.example.\n",
        # a policy that does not parse: reported, delivered without it
        "stsbad.example": soa("stsbad.example") + mx % "127.0.0.1" +
        'mta-sts A 127.0.0.1\n_mta-sts TXT "v=STSv1; id=1;"\n',
        "esp.example": soa("esp.example") + dkim_rec,
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    rsink = start_sink(datadir)
    servers.append(rsink)

    clock = os.path.join(datadir, "clock")
    noon = int(time.time()) // 86400 * 86400 + 43200
    day = time.strftime("%Y-%m-%d", time.gmtime(noon))

    def set_clock(t):
        with open(clock + ".tmp", "w") as f:
            f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))
        os.replace(clock + ".tmp", clock)
    set_clock(noon)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    spool = os.path.join(datadir, "a-spool")
    args = ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
            "--smtp-port", str(b.port), "--retry-schedule", "1h", "--max-age", "3d",
            "--tls-ca", ca, "--mta-sts-port", str(web.port), "--mta-sts-timeout", "10s",
            "--tls-policy", "req.example=required", "--tls-policy", "norpt.example=required",
            "--tls-policy", "bad.example=required", "--tls-policy", "web.example=required",
            "--tlsrpt-port", str(rweb.port),
            "--route", "reports.example=127.0.0.1:%d" % rsink.port,
            "--tlsrpt", "on", "--tlsrpt-delay", "0", "--tlsrpt-org", 'Example "ESP"',
            "--tlsrpt-contact", "postmaster@esp.example",
            "--tlsrpt-from", "tlsrpt-noreply@esp.example",
            "--dkim-key", "esp.example=s1:" + key]
    a = start_relay(datadir, args, spool=spool, name="a")
    servers.append(a)
    rcpts = ["u@req.example", "u@ok.example", "u@sts.example", "u@norpt.example",
             "u@bad.example", "u@web.example", "u@stsbad.example"]
    for r in rcpts:
        extra = ["u@ok2.example"] if r == "u@ok.example" else []
        submit(a.port, "alice@example.com", [r] + extra, data=message(r))

    def outcomes():
        return {e["rcpt"]: e for e in events(a) if e["event"] in ("delivery", "transient")}
    assert wait_for(lambda: len(outcomes()) == 8), a.output()
    o = outcomes()
    assert o["u@ok.example"]["event"] == "delivery" and o["u@ok.example"]["tls"] is True
    assert o["u@sts.example"]["mta_sts"] == "testing-fail", o
    for r in ("u@req.example", "u@norpt.example", "u@bad.example", "u@web.example"):
        assert o[r]["event"] == "transient" and "4.7.5" in o[r]["reply"], o

    # a minute later the counters are on disk, the relay still running
    state = os.path.join(spool, "tlsrpt", day)
    assert not os.path.exists(state)
    set_clock(noon + 61)
    assert wait_for(lambda: os.path.exists(state), timeout=5), a.output()
    r = show(spool, "--day", day)
    assert r.returncode == 0, r.stderr
    shown = reports(r.stdout)
    assert sorted(shown) == ["bad.example", "norpt.example", "ok.example", "ok2.example",
                             "req.example", "sts.example", "stsbad.example",
                             "web.example"], r.stdout
    req = shown["req.example"]
    assert req["organization-name"] == "Example ESP"
    assert req["contact-info"] == "postmaster@esp.example"
    assert req["date-range"] == {"start-datetime": day + "T00:00:00Z",
                                 "end-datetime": day + "T23:59:59Z"}
    # a local "required" is no published policy: no-policy-found (RFC 8460 4.4)
    assert req["policies"] == [{
        "policy": {"policy-type": "no-policy-found", "policy-domain": "req.example"},
        "summary": {"total-successful-session-count": 0, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "starttls-not-supported",
                             "sending-mta-ip": "127.0.0.1",
                             "receiving-mx-hostname": "mx.req.example",
                             "receiving-ip": "127.0.0.2", "failed-session-count": 1}]}]
    assert shown["ok.example"]["policies"] == [{
        "policy": {"policy-type": "no-policy-found", "policy-domain": "ok.example"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0}}]
    # the session counts for the other domain whose mail it carried too
    assert shown["ok2.example"]["policies"] == [{
        "policy": {"policy-type": "no-policy-found", "policy-domain": "ok2.example"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0}}]
    sts = shown["sts.example"]["policies"]
    assert sts == [{
        "policy": {"policy-type": "sts",
                   "policy-string": ["version: STSv1", "mode: testing", "mx: mx.sts.example",
                                     "max_age: 86400"],
                   "policy-domain": "sts.example", "mx-host": ["mx.sts.example"]},
        "summary": {"total-successful-session-count": 0, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "certificate-host-mismatch",
                             "sending-mta-ip": "127.0.0.1",
                             "receiving-mx-hostname": "mx.sts.example",
                             "receiving-ip": "127.0.0.1", "failed-session-count": 1}]}], sts
    # the failed policy fetch is a failure of its own, without a session's fields
    assert shown["stsbad.example"]["policies"] == [{
        "policy": {"policy-type": "no-policy-found", "policy-domain": "stsbad.example"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "sts-policy-invalid",
                             "failed-session-count": 1}]}], shown["stsbad.example"]
    # -c: the [relay] section of the config file names the spool and the rest
    ini = os.path.join(datadir, "relay.ini")
    with open(ini, "w") as f:
        f.write("[relay]\nspool = %s\nhostname = relay.test\ntlsrpt = on\n"
                "tlsrpt-org = From the file\n" % spool)
    r = subprocess.run([MAILREP, "tlsrpt", "show", "-c", ini, "--day", day, "--domain",
                        "ok.example"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["organization-name"] == "From the file"
    assert rep["report-id"] == "%s.ok.example@relay.test" % day
    r = show(spool, "--day", "2026-02-30")
    assert r.returncode != 0 and "bad day '2026-02-30'" in r.stderr, r.stderr
    r = show(spool, "--day", day, "--domain", "nosuch.example")
    assert r.returncode != 0 and "no TLS counters for nosuch.example" in r.stderr
    stop_clean(a)
    assert not sink_files(rsink) and not rweb.posts

    # after midnight (and a restart) the reports go out
    set_clock(noon + 12 * 3600 + 30)
    a = start_relay(datadir, args, spool=spool, name="a2")
    servers.append(a)
    # queued and delivered like other mail, from --tlsrpt-from (the dumps
    # are read once their deliveries are logged: smtp-sink writes them late)
    def delivered():
        return [e for e in events(a) if e["event"] == "delivery" and
                e.get("rcpt") == "tlsrpt@reports.example"]
    assert wait_for(lambda: len(delivered()) == 3), a.output()
    assert all(e["sender"] == "tlsrpt-noreply@esp.example" for e in delivered())
    assert len(sink_files(rsink)) == 3
    assert wait_for(lambda: os.path.exists(state + ".sent")), a.output()
    assert not os.path.exists(state)
    assert "tlsrpt bad.example: TXT record at _smtp._tls.bad.example: bad mailto URI" \
        in a.output(), a.output()
    got = {}
    for raw in sink_files(rsink):
        m = email.message_from_bytes(raw, policy=email.policy.default)
        got[m["TLS-Report-Domain"]] = m
        # signed like other mail from esp.example
        signed = raw[raw.index(b"DKIM-Signature:"):]
        p = subprocess.run([MAILREP, "dkim", "verify", "--resolver", knot.resolver],
                           input=signed, capture_output=True, timeout=30)
        assert p.stdout.startswith(b"dkim=pass d=esp.example s=s1"), p.stdout + p.stderr
    assert sorted(got) == ["ok.example", "req.example", "sts.example"]
    begin = noon - 43200
    for dom, m in got.items():
        assert m["TLS-Report-Submitter"] == "esp.example"
        assert m["To"].addresses[0].addr_spec == "tlsrpt@reports.example"
        assert m["From"].addresses[0].addr_spec == "tlsrpt-noreply@esp.example"
        rid = "%s.%s@relay.test" % (day, dom)
        assert m["Subject"] == "Report Domain: %s Submitter: esp.example Report-ID: <%s>" % (
            dom, rid)
        assert m.get_content_type() == "multipart/report"
        assert m.get_param("report-type") == "tlsrpt"
        parts = [p for p in m.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
        assert len(parts) == 1
        assert parts[0].get_filename() == "esp.example!%s!%d!%d.json.gz" % (
            dom, begin, begin + 86399)
        rep = json.loads(gzip.decompress(base64.b64decode(parts[0].get_payload())))
        assert rep["report-id"] == rid
        assert rep["organization-name"] == 'Example "ESP"'
        assert rep["policies"] == shown[dom]["policies"], (dom, rep)
    # the https: URI got the same report by POST
    assert wait_for(lambda: rweb.posts), a.output()
    assert len(rweb.posts) == 1
    path, headers, body = rweb.posts[0]
    assert path == "/v1/tlsrpt"
    assert headers["Content-Type"] == "application/tlsrpt+gzip"
    assert headers["Host"] == "rpt.reports.example"
    rep = json.loads(gzip.decompress(body))
    assert rep["report-id"] == "%s.web.example@relay.test" % day
    assert rep["policies"] == shown["web.example"]["policies"]
    assert rep["policies"][0]["failure-details"][0]["result-type"] == "starttls-not-supported"
    assert wait_for(lambda: "report posted to https://rpt.reports.example:%d/v1/tlsrpt" %
                    rweb.port in a.output()), a.output()
    # the day reported is shown still, from DAY.sent
    assert show(spool, "--day", day).returncode == 0
    stop_clean(a)


def test_dane_results(datadir, servers):
    """DANE's outcomes as the report says them, through the DANE test's
    world (knotd signing, unbound validating, B with a CA-signed chain):
    the policy is tlsa with the host's records, and each failure has its
    result type; dane-only without records is dane-required."""
    from test_relay_dane import sender as dane_sender, world
    b, bsink, plain, unbound, _, _ = world(datadir, servers)
    os.makedirs(os.path.join(datadir, "a"))
    a = dane_sender(datadir, unbound, b.port, "a",
                    ["--dane", "on", "--tls-policy", "only.plain.example=dane-only",
                     "--tlsrpt", "on"])
    servers.append(a)
    names = ["ee", "bad", "tawrong", "notls", "bogus"]
    rcpts = ["u@%s.dane.example" % n for n in names] + ["u@only.plain.example"]
    for r in rcpts:
        submit(a.port, "alice@example.com", [r], data=message(r))
    assert wait_for(lambda: len([e for e in events(a) if e["event"] in
                                 ("delivery", "transient")]) == len(rcpts), timeout=30), \
        a.output()
    stop_clean(a)
    r = show(os.path.join(datadir, "a", "spool"))
    assert r.returncode == 0, r.stderr
    got = reports(r.stdout)

    def one(dom):
        pols = got[dom]["policies"]
        assert len(pols) == 1, pols
        return pols[0]
    ee = one("ee.dane.example")
    assert ee["policy"]["policy-type"] == "tlsa"
    assert len(ee["policy"]["policy-string"]) == 1
    assert ee["policy"]["policy-string"][0].startswith("3 1 1 ")
    assert ee["summary"] == {"total-successful-session-count": 1,
                             "total-failure-session-count": 0}
    want = {"bad.dane.example": ("tlsa", "validation-failure"),
            "tawrong.dane.example": ("tlsa", "certificate-host-mismatch"),
            "notls.dane.example": ("tlsa", "starttls-not-supported"),
            "bogus.dane.example": ("tlsa", "dnssec-invalid"),
            "only.plain.example": ("no-policy-found", "dane-required")}
    for dom, (ptype, result) in want.items():
        p = one(dom)
        assert p["policy"]["policy-type"] == ptype, (dom, p)
        assert p["summary"] == {"total-successful-session-count": 0,
                                "total-failure-session-count": 1}, (dom, p)
        d = p["failure-details"]
        assert len(d) == 1 and d[0]["result-type"] == result, (dom, p)
        assert d[0]["receiving-mx-hostname"] == "mx-%s" % dom, (dom, p)
        assert d[0]["failed-session-count"] == 1
    # a TLSA lookup that failed has no records to show
    assert one("bogus.dane.example")["policy"]["policy-string"] == []


# ---- a failed report is tried again (RFC 8460 5.4) --------------------------------------


def retry_world(datadir, servers):
    """knotd with web.example asking for reports by POST to
    rpt.reports.example (127.0.0.1), that host's certificate, and
    yesterday's counters for web.example in a new spool, due at once.
    Returns (args, spool, day, (cert, key))."""
    ca, sign = make_ca(datadir)
    cert = sign("rpt", ["rpt.reports.example"])
    zones = {
        "web.example": soa("web.example") +
        '_smtp._tls TXT "v=TLSRPTv1; rua=https://rpt.reports.example/v1/tlsrpt"\n',
        "reports.example": soa("reports.example") + "rpt A 127.0.0.1\n",
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    spool = os.path.join(datadir, "spool")
    os.makedirs(os.path.join(spool, "tlsrpt"))
    with open(os.path.join(spool, "tlsrpt", day), "w") as f:
        f.write("mailrep-tlsrpt v1 %s\ndropped 0\ndomain web.example 0\n"
                "policy no-policy-found 0 1 0\n"
                "row starttls-not-supported 1 127.0.0.1 127.0.0.2 mx.web.example\nend\n" % day)
    port = free_port()
    args = ["--resolver", knot.resolver, "--tls-ca", ca, "--tlsrpt", "on",
            "--tlsrpt-delay", "0", "--tlsrpt-retry", "1s", "--tlsrpt-port", str(port)]
    return args, spool, day, cert, port


def pending(spool):
    d = os.path.join(spool, "tlsrpt", "retry")
    return sorted(n for n in os.listdir(d)) if os.path.isdir(d) else []


def test_failed_post_is_tried_again(datadir, servers):
    """The endpoint answers 503 twice, then takes the report: it arrives
    once, after attempts 1 s and 3 s apart, and nothing is left pending."""
    args, spool, day, (cert, key), port = retry_world(datadir, servers)
    rweb = ReportServer(cert, key, port=port, fail=2)
    servers.append(rweb)
    a = start_relay(datadir, args, spool=spool, name="a")
    servers.append(a)
    uri = "https://rpt.reports.example/v1/tlsrpt"
    assert wait_for(lambda: "tlsrpt web.example: the report for %s to %s failed (the server "
                    "answered 'HTTP/1.0 503 Service Unavailable'): attempt 2 in 1 s" % (day, uri)
                    in a.output(), timeout=15), a.output()
    assert wait_for(lambda: "attempt 3 in 3 s" in a.output(), timeout=15), a.output()
    assert len(pending(spool)) == 1
    assert wait_for(lambda: rweb.posts, timeout=15), a.output()
    assert wait_for(lambda: "report posted to https://rpt.reports.example:%d/v1/tlsrpt "
                    "(%s, attempt 3)" % (port, day) in a.output()), a.output()
    assert wait_for(lambda: not pending(spool)), pending(spool)
    time.sleep(2)
    assert rweb.refused == 2 and len(rweb.posts) == 1, a.output()
    rep = json.loads(gzip.decompress(rweb.posts[0][2]))
    assert rep["report-id"] == "%s.web.example@relay.test" % day
    assert os.path.exists(os.path.join(spool, "tlsrpt", day + ".sent"))
    stop_clean(a)


def test_pending_report_survives_kill(datadir, servers):
    """Nothing listens at the endpoint: the report is kept; the relay is
    killed (-9) and started again once the endpoint is up, and the report
    kept is posted then, once."""
    args, spool, day, (cert, key), port = retry_world(datadir, servers)
    a = start_relay(datadir, args, spool=spool, name="a")
    servers.append(a)
    assert wait_for(lambda: "tlsrpt web.example: the report for %s to https://rpt.reports."
                    "example/v1/tlsrpt failed (connect: Connection refused): attempt 2 in 1 s"
                    % day in a.output(), timeout=15), a.output()
    assert wait_for(lambda: os.path.exists(os.path.join(spool, "tlsrpt", day + ".sent")))
    a.proc.kill()
    a.proc.wait()
    kept = pending(spool)
    assert len(kept) == 1, kept
    with open(os.path.join(spool, "tlsrpt", "retry", kept[0]), "rb") as f:
        head = f.read().split(b"\nreport ")[0].decode()
    assert "\ndomain web.example\nday %s\nuri https://rpt.reports.example/v1/tlsrpt\n" % day \
        in head, head
    rweb = ReportServer(cert, key, port=port)
    servers.append(rweb)
    a = start_relay(datadir, args, spool=spool, name="a2")
    servers.append(a)
    assert "tlsrpt web.example: the report for %s to https://rpt.reports.example/v1/tlsrpt is " \
        "pending: attempt" % day in a.output(), a.output()
    assert wait_for(lambda: rweb.posts, timeout=15), a.output()
    assert wait_for(lambda: not pending(spool)), a.output()
    time.sleep(2)
    assert len(rweb.posts) == 1, a.output()
    rep = json.loads(gzip.decompress(rweb.posts[0][2]))
    assert rep["report-id"] == "%s.web.example@relay.test" % day
    stop_clean(a)


def test_pending_files_at_start(datadir, servers):
    """What a start finds in SPOOL/tlsrpt/retry: a report by mail still due
    is queued and delivered; one first tried more than a day ago is given
    up; a file that does not parse is set aside, the log naming it and
    the offset."""
    rsink = start_sink(datadir)
    servers.append(rsink)
    zones = {"reports.example": soa("reports.example")}
    knot = start_knot(datadir, zones)
    servers.append(knot)
    spool = os.path.join(datadir, "spool")
    rdir = os.path.join(spool, "tlsrpt", "retry")
    os.makedirs(rdir)
    now = int(time.time())
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
    gz = gzip.compress(b'{"report-id": "x"}')

    def kept(name, first, uri="mailto:tlsrpt@reports.example", extra=b""):
        head = ("mailrep-tlsrpt-retry v1\ndomain web.example\nday %s\nuri %s\n"
                "first %d\nnext %d\nattempts 1\nreport %d\n" %
                (day, uri, first, first + 60, len(gz))).encode()
        with open(os.path.join(rdir, name), "wb") as f:
            f.write(head + gz + extra)
        return len(head)
    kept("00000000000000a1", now - 600)
    kept("00000000000000b2", now - 86400 - 60, uri="https://rpt.reports.example/")
    off = kept("00000000000000c3", now - 600, extra=b"more")
    if os.geteuid() == 0:
        # the relay, root at first, gives only the spool's top to the user it
        # becomes; what it did not create below that is given here
        user = "mailrep" if any(p.pw_name == "mailrep" for p in pwd.getpwall()) else "nobody"
        for d, _, names in os.walk(spool):
            for n in [d] + [os.path.join(d, n) for n in names]:
                shutil.chown(n, user)
    args = ["--resolver", knot.resolver, "--tlsrpt", "on", "--tlsrpt-retry", "1s",
            "--route", "reports.example=127.0.0.1:%d" % rsink.port]
    a = start_relay(datadir, args, spool=spool, name="a")
    servers.append(a)

    def delivered():
        return [e for e in events(a) if e["event"] == "delivery" and
                e.get("rcpt") == "tlsrpt@reports.example"]
    assert wait_for(lambda: len(delivered()) == 1, timeout=15), a.output()
    out = a.output()
    assert "tlsrpt web.example: the report for %s to https://rpt.reports.example/ is given up " \
        "after 1 attempt: its first was more than 86400 s ago" % day in out, out
    assert "tlsrpt: %s/00000000000000c3: offset %d: %d bytes of report, not %d; set aside as " \
        "00000000000000c3.bad" % (rdir, off, len(gz) + 4, len(gz)) in out, out
    assert wait_for(lambda: sorted(os.listdir(rdir)) == ["00000000000000c3.bad"]), \
        (os.listdir(rdir), out)
    files = sink_files(rsink)
    assert len(files) == 1
    m = email.message_from_bytes(files[0], policy=email.policy.default)
    assert m["TLS-Report-Domain"] == "web.example"
    part = [p for p in m.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"][0]
    assert base64.b64decode(part.get_payload()) == gz
    stop_clean(a)
