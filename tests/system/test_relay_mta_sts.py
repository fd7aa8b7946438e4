"""MTA-STS (RFC 8461) in mailrep relay's delivery, end to end on loopback.

knotd serves the zones: each domain's MX, its `_mta-sts` TXT record and
`mta-sts.DOMAIN` at 127.0.0.1. Python's http.server with ssl (standard
library) serves the policies over HTTPS with a certificate from a private
CA that the sending relay (A) is given with --tls-ca. The MX hosts are a
second mailrep relay (B) with a certificate from the same CA for their
names, at 127.0.0.1, and smtp-sink (no STARTTLS) at 127.0.0.2, on the same
port (--smtp-port).

Cases: enforce with a listed MX and a good certificate is delivered over
TLS; enforce with an MX the policy does not list is deferred (4.7.5, the
reason logged) and nothing is sent; enforce towards a server without
STARTTLS is deferred and never sent in plain text; testing delivers and
says "testing-fail" (or "testing" when the check would have passed) in
the accounting line; a policy file with an error, a redirect and an HTTPS
certificate for another name are no policy, each logged with its reason;
a domain without a record is delivered as before. Across
restarts: the policy cached on disk stays in force when a new fetch fails,
and a new TXT id makes the relay fetch again. With the relay's clock
moved: a policy in use is refreshed in the background before max_age,
and a failed refresh keeps it until max_age. A [domain NAME] section's
mta-sts key opts a domain out or in. The cache files of expired
policies are removed, at start and hourly."""
import http.server
import os
import ssl
import subprocess
import threading
import time

from conftest import MAILREP, datadir, free_port, servers  # noqa: F401 (fixtures)
from knot import soa, start_knot
from relay_peers import start_sink_at
from relay_util import events, message, sink_files, start_relay, stop_clean, submit, wait_for


def make_ca(d):
    """A private CA: (ca.pem, sign) where sign(prefix, names) returns the
    (cert, key) of a server certificate for those DNS names."""
    ca, cakey = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", cakey, "-out", ca,
                    "-days", "2", "-subj", "/CN=mailrep test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)

    def sign(prefix, names):
        key, csr = os.path.join(d, prefix + ".key"), os.path.join(d, prefix + ".csr")
        cert, ext = os.path.join(d, prefix + ".pem"), os.path.join(d, prefix + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n" % ",".join("DNS:" + n for n in names))
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", "/CN=" + names[0]], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey,
                        "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
                       check=True, capture_output=True)
        return cert, key
    return ca, sign


class PolicyServer:
    """HTTPS on 127.0.0.1: GET /.well-known/mta-sts.txt answers the policy
    set for the Host header (404 when none), after delay seconds; counts
    the requests per host."""

    def __init__(self, cert, key, port=None):
        self.policies = {}
        self.fetches = {}
        self.delay = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                outer.fetches[host] = outer.fetches.get(host, 0) + 1
                body = outer.policies.get(host)
                time.sleep(outer.delay)
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                if body.startswith("redirect:"):
                    self.send_response(301)
                    self.send_header("Location", body[9:])
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.port = port or free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def policy(mode, *mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx), max_age)


def zone(domain, mx_addr, sts_id=None):
    """domain's zone: MX mx.DOMAIN at mx_addr, mta-sts.DOMAIN at 127.0.0.1,
    and the TXT record when sts_id is given."""
    z = soa(domain) + "@ MX 10 mx\nmx A %s\nmta-sts A 127.0.0.1\n" % mx_addr
    if sts_id:
        z += '_mta-sts TXT "v=STSv1; id=%s;"\n' % sts_id
    return z


def receiver(d, servers, sign, names):
    """Relay B: STARTTLS with a CA-signed certificate for names, passing
    the mail on to its own smtp-sink; and smtp-sink at 127.0.0.2 on the
    same port. Returns (B, B's sink, the plain sink)."""
    port = free_port()
    bd = os.path.join(d, "b")
    os.makedirs(bd, exist_ok=True)
    cert, key = sign("mx", names)
    bsink = start_sink_at(bd, "127.0.0.1", free_port())
    servers.append(bsink)
    b = start_relay(bd, ["--trusted", "127.0.0.1/32",
                         "--route", "*=127.0.0.1:%d" % bsink.port,
                         "--tls-cert", cert, "--tls-key", key], port=port)
    servers.append(b)
    plain = start_sink_at(d, "127.0.0.2", port)
    servers.append(plain)
    return b, bsink, plain


def sender(d, knot, port, ca, https, spool=None, extra=()):
    a = start_relay(d, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                        "--smtp-port", str(port), "--retry-schedule", "1h",
                        "--tls-ca", ca, "--mta-sts-port", str(https),
                        "--mta-sts-timeout", "10s"] + list(extra), spool=spool, name="a")
    return a


def by_rcpt(relay, kind):
    return {e["rcpt"]: e for e in events(relay) if e["event"] == kind}


def test_enforce_testing_and_broken_policies(datadir, servers):
    ca, sign = make_ca(datadir)
    sts = ["good", "notlisted", "plain", "testing", "testok", "badpolicy", "redirect",
           "badcert"]
    # the HTTPS certificate is not for mta-sts.badcert.example
    hcert, hkey = sign("https", ["mta-sts.%s.example" % n for n in sts if n != "badcert"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    web.policies = {
        "mta-sts.good.example": policy("enforce", "mx.good.example"),
        "mta-sts.notlisted.example": policy("enforce", "mx.elsewhere.example",
                                            "*.mx.notlisted.example"),
        "mta-sts.plain.example": policy("enforce", "*.plain.example"),
        "mta-sts.testing.example": policy("testing", "mx.testing.example"),
        "mta-sts.testok.example": policy("testing", "mx.testok.example"),
        "mta-sts.badpolicy.example": "version: STSv1\nmode: sometimes\nmx: mx.badpolicy.example\n"
                                     "max_age: 86400\n",
        "mta-sts.redirect.example": "redirect:https://mta-sts.good.example/.well-known/mta-sts.txt",
        "mta-sts.badcert.example": policy("enforce", "mx.badcert.example"),
    }
    b, bsink, plain = receiver(datadir, servers, sign,
                               ["mx.good.example", "mx.notlisted.example", "mx.testok.example"])
    zones = {
        "good.example": zone("good.example", "127.0.0.1", "1"),
        "notlisted.example": zone("notlisted.example", "127.0.0.1", "1"),
        "plain.example": zone("plain.example", "127.0.0.2", "1"),
        "testing.example": zone("testing.example", "127.0.0.2", "1"),
        "testok.example": zone("testok.example", "127.0.0.1", "1"),
        "badpolicy.example": zone("badpolicy.example", "127.0.0.2", "1"),
        "redirect.example": zone("redirect.example", "127.0.0.2", "1"),
        "badcert.example": zone("badcert.example", "127.0.0.2", "1"),
        "nopolicy.example": zone("nopolicy.example", "127.0.0.2"),
    }
    knot = start_knot(datadir, zones)
    servers.append(knot)
    a = sender(datadir, knot, b.port, ca, web.port)
    servers.append(a)
    rcpts = ["u@%s.example" % n for n in sts + ["nopolicy"]]
    for r in rcpts:
        submit(a.port, "alice@example.com", [r], data=message(r))
    done = wait_for(lambda: len(by_rcpt(a, "delivery")) + len(by_rcpt(a, "transient")) == 9)
    assert done, a.output() + "\n" + str(events(a))
    ok, tr = by_rcpt(a, "delivery"), by_rcpt(a, "transient")
    assert sorted(ok) == ["u@badcert.example", "u@badpolicy.example", "u@good.example",
                          "u@nopolicy.example", "u@redirect.example", "u@testing.example",
                          "u@testok.example"], (ok, tr)
    # enforce, the MX listed and its certificate good: over TLS
    assert ok["u@good.example"]["tls"] is True
    assert ok["u@good.example"]["mta_sts"] == "enforce"
    # testing: delivered either way, the check reported
    assert ok["u@testok.example"]["tls"] is True
    assert ok["u@testok.example"]["mta_sts"] == "testing"
    assert ok["u@testing.example"]["tls"] is False
    assert ok["u@testing.example"]["mta_sts"] == "testing-fail"
    # a bad policy file is no policy, and the log names its line
    assert "mta_sts" not in ok["u@badpolicy.example"]
    assert "mta-sts badpolicy.example" in a.output()
    assert "line 2: mode must be enforce, testing or none, not 'sometimes'" in a.output()
    assert "mta_sts" not in ok["u@nopolicy.example"]
    # a redirect is not followed, a certificate for another name not taken: no policy
    assert "mta_sts" not in ok["u@redirect.example"]
    assert "HTTP 301: redirects are not followed" in a.output()
    assert "mta_sts" not in ok["u@badcert.example"]
    assert ("https://mta-sts.badcert.example/.well-known/mta-sts.txt failed: TLS handshake: "
            "certificate not accepted: hostname mismatch") in a.output(), a.output()
    # enforce, no MX listed: deferred, the reason in the reply and the log
    n = tr["u@notlisted.example"]
    assert n["code"] == 451 and "4.7.5" in n["reply"], n
    assert "no MX host matches" in n["reply"] and "mx.notlisted.example" in n["reply"], n
    assert "notlisted.example: MTA-STS policy" in a.output()
    # enforce, a server without STARTTLS: deferred, never in plain text
    p = tr["u@plain.example"]
    assert p["code"] == 451 and "4.7.5" in p["reply"] and p["tls"] is False, p
    assert p["mta_sts"] == "enforce"
    # what reached the receivers: B has good and testok, the plain sink the
    # rest that was delivered; nothing of notlisted or plain anywhere
    assert wait_for(lambda: len(by_rcpt(b, "delivery")) == 2), b.output()
    files_b = sink_files(bsink)
    files_p = sink_files(plain)
    assert len(files_b) == 2 and len(files_p) == 5, (len(files_b), len(files_p))
    for f in files_b + files_p:
        assert b"notlisted.example" not in f and b"u@plain.example" not in f
    # one fetch per policy, none for the domain without a record
    for n in sts:
        # badcert's handshake fails before any request
        want = None if n == "badcert" else 1
        assert web.fetches.get("mta-sts.%s.example" % n) == want, web.fetches
    assert "mta-sts.nopolicy.example" not in web.fetches
    stop_clean(a)
    stop_clean(b)


def test_disk_cache_outlives_a_failed_fetch_and_a_new_id_refetches(datadir, servers):
    """1: id 1, enforce mx.cached.example, delivered. 2: after a restart,
    the MX is mx2.cached.example, the TXT says id 2 and the HTTPS server is
    gone: the policy cached on disk (id 1) stays in force, so the mail is
    deferred. 3: after another restart the server is back with id 3, which
    lists mx2: the relay fetches again and delivers."""
    ca, sign = make_ca(datadir)
    hcert, hkey = sign("https", ["mta-sts.cached.example"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    web.policies["mta-sts.cached.example"] = policy("enforce", "mx.cached.example")
    b, bsink, _ = receiver(datadir, servers, sign, ["mx.cached.example", "mx2.cached.example"])
    spool = os.path.join(datadir, "a-spool")

    def run(phase, mx, sts_id):
        z = soa("cached.example") + ("@ MX 10 %s\n%s A 127.0.0.1\nmta-sts A 127.0.0.1\n"
                                     '_mta-sts TXT "v=STSv1; id=%s;"\n' % (mx, mx, sts_id))
        d = os.path.join(datadir, "phase%d" % phase)
        os.makedirs(d)
        knot = start_knot(d, {"cached.example": z})
        servers.append(knot)
        a = sender(d, knot, b.port, ca, web.port, spool=spool)
        servers.append(a)
        submit(a.port, "alice@example.com", ["u%d@cached.example" % phase],
               data=message("phase%d" % phase))
        return a

    a = run(1, "mx", "1")
    assert wait_for(lambda: by_rcpt(a, "delivery")), a.output()
    assert by_rcpt(a, "delivery")["u1@cached.example"]["mta_sts"] == "enforce"
    assert web.fetches == {"mta-sts.cached.example": 1}
    stop_clean(a)
    with open(os.path.join(spool, "mta-sts", "cached.example")) as f:
        assert f.read().startswith("id 1\n")

    web.stop()
    servers.remove(web)
    # a damaged cache file is skipped, with its line named
    broken = os.path.join(spool, "mta-sts", "broken.example")
    with open(broken, "w") as f:
        f.write("id 1\nfetched 5\n\nversion: STSv2\n")
    a = run(2, "mx2", "2")
    assert "%s: line 4: version must be STSv1, not 'STSv2' (ignored)" % broken in a.output()
    t = wait_for(lambda: by_rcpt(a, "transient"))
    assert t, a.output()
    e = t["u2@cached.example"]
    assert e["code"] == 451 and "no MX host matches" in e["reply"], e
    assert "(id 1, enforce)" in e["reply"], e
    assert wait_for(lambda: "the cached policy (id 1) stays in force" in a.output()), a.output()
    assert "mta-sts: 1 cached policies" in a.output()
    time.sleep(0.5)
    assert not by_rcpt(a, "delivery")
    stop_clean(a)

    web2 = PolicyServer(hcert, hkey, port=web.port)
    servers.append(web2)
    web2.policies["mta-sts.cached.example"] = policy("enforce", "mx2.cached.example")
    a = run(3, "mx2", "3")
    assert wait_for(lambda: "u3@cached.example" in by_rcpt(a, "delivery")), a.output()
    d = by_rcpt(a, "delivery")["u3@cached.example"]
    assert d["tls"] is True and d["mta_sts"] == "enforce", d
    assert web2.fetches == {"mta-sts.cached.example": 1}
    assert "TXT id 3, cached policy id 1: fetching" in a.output()
    with open(os.path.join(spool, "mta-sts", "cached.example")) as f:
        assert f.read().startswith("id 3\n")
    stop_clean(a)
    web2.stop()
    servers.remove(web2)
    assert len(sink_files(bsink)) == 2


def test_wrong_certificate_explicit_tls_policy_and_off(datadir, servers):
    """enforce and an MX whose certificate is not for its name: deferred
    with the name in the reason, nothing sent. An explicit --tls-policy for
    a domain comes before its policy (the unlisted MX is used). With
    --mta-sts off nothing is looked up and the same mail goes out."""
    ca, sign = make_ca(datadir)
    names = ["wrongcert", "override", "unlisted"]
    hcert, hkey = sign("https", ["mta-sts.%s.example" % n for n in names])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    for n in names:
        web.policies["mta-sts.%s.example" % n] = policy(
            "enforce", "mx.%s.example" % n if n == "wrongcert" else "mx.other.example")
    b, bsink, _ = receiver(datadir, servers, sign, ["mx.override.example", "mx.unlisted.example"])
    knot = start_knot(datadir, {n + ".example": zone(n + ".example", "127.0.0.1", "7")
                                for n in names})
    servers.append(knot)
    a = sender(datadir, knot, b.port, ca, web.port,
               extra=["--tls-policy", "override.example=opportunistic"])
    servers.append(a)
    for n in names:
        submit(a.port, "alice@example.com", ["u@%s.example" % n], data=message(n))
    assert wait_for(lambda: len(by_rcpt(a, "delivery")) + len(by_rcpt(a, "transient")) == 3), \
        a.output()
    ok, tr = by_rcpt(a, "delivery"), by_rcpt(a, "transient")
    assert sorted(ok) == ["u@override.example"], (ok, tr)
    assert "mta_sts" not in ok["u@override.example"]
    w = tr["u@wrongcert.example"]
    assert w["code"] == 451 and "4.7.5" in w["reply"] and w["mta_sts"] == "enforce", w
    assert "hostname mismatch" in w["reply"] and "mx.wrongcert.example" in w["reply"], w
    assert "no MX host matches" in tr["u@unlisted.example"]["reply"]
    assert "mta-sts.override.example" not in web.fetches
    stop_clean(a)
    assert len(sink_files(bsink)) == 1

    d = os.path.join(datadir, "off")
    os.makedirs(d)
    fetched = dict(web.fetches)
    a = sender(d, knot, b.port, ca, web.port, extra=["--mta-sts", "off"])
    servers.append(a)
    submit(a.port, "alice@example.com", ["v@unlisted.example"], data=message("off"))
    assert wait_for(lambda: by_rcpt(a, "delivery")), a.output()
    assert "mta_sts" not in by_rcpt(a, "delivery")["v@unlisted.example"]
    assert web.fetches == fetched
    assert not os.path.exists(os.path.join(d, "spool", "mta-sts"))
    stop_clean(a)


def test_per_domain_mta_sts_key(datadir, servers):
    """[domain NAME] mta-sts = off opts one domain out (no TXT query, no
    fetch, mail as without a policy) while others keep theirs; with
    mta-sts = off in [relay], mta-sts = on opts one domain in. A bad
    value stops the relay with the file and line named."""
    ca, sign = make_ca(datadir)
    names = ["optout", "kept"]
    hcert, hkey = sign("https", ["mta-sts.%s.example" % n for n in names])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    for n in names:  # enforce, and the MX host not listed
        web.policies["mta-sts.%s.example" % n] = policy("enforce", "mx.other.example")
    b, bsink, _ = receiver(datadir, servers, sign, ["mx.optout.example", "mx.kept.example"])
    knot = start_knot(datadir, {n + ".example": zone(n + ".example", "127.0.0.1", "1")
                                for n in names})
    servers.append(knot)

    def run(sub, conf):
        d = os.path.join(datadir, sub)
        os.makedirs(d)
        path = os.path.join(d, "relay.ini")
        with open(path, "w") as f:
            f.write(conf)
        a = sender(d, knot, b.port, ca, web.port, extra=["-c", path])
        servers.append(a)
        for n in names:
            submit(a.port, "alice@example.com", ["%s@%s.example" % (sub, n)], data=message(n))
        assert wait_for(lambda: len(by_rcpt(a, "delivery")) + len(by_rcpt(a, "transient")) == 2), \
            a.output()
        return a, by_rcpt(a, "delivery"), by_rcpt(a, "transient")

    # on by default, optout.example opts out
    a, ok, tr = run("out", "[domain optout.example]\nmta-sts = off\n")
    assert sorted(ok) == ["out@optout.example"], (ok, tr)
    assert "mta_sts" not in ok["out@optout.example"]
    assert "no MX host matches" in tr["out@kept.example"]["reply"]
    assert web.fetches == {"mta-sts.kept.example": 1}
    stop_clean(a)
    # off by default, kept.example opts in
    a, ok, tr = run("in", "[relay]\nmta-sts = off\n\n[domain Kept.Example]\nmta-sts = on\n")
    assert sorted(ok) == ["in@optout.example"], (ok, tr)
    assert "mta_sts" not in ok["in@optout.example"]
    assert "no MX host matches" in tr["in@kept.example"]["reply"]
    assert web.fetches == {"mta-sts.kept.example": 2}
    stop_clean(a)
    assert len(sink_files(bsink)) == 2
    # a bad value
    bad = os.path.join(datadir, "bad.ini")
    with open(bad, "w") as f:
        f.write("[domain optout.example]\nconn-limit = 2\nmta-sts = sometimes\n")
    r = subprocess.run([MAILREP, "relay", "-c", bad, "--listen", "127.0.0.1:%d" % free_port(),
                        "--spool", os.path.join(datadir, "bs")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, r.stderr
    assert ("%s:3: domain optout.example: mta-sts: expected on or off, not 'sometimes'" % bad) \
        in r.stderr, r.stderr


def set_clock(clock, t):
    with open(clock + ".tmp", "w") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))
    os.replace(clock + ".tmp", clock)


def test_policy_in_use_is_refreshed_before_max_age(datadir, servers, monkeypatch):
    """The relay's clock moves past half of max_age (3600 s) while the
    domain is mailed: the policy is fetched again in the background (the
    server answers after 4 s), the mail meanwhile goes under the old
    policy (enforce), and the next mail under the refreshed one (testing).
    Then the HTTPS server is gone: a refresh that fails leaves the policy
    in force until its max_age, and after that the domain has none."""
    ca, sign = make_ca(datadir)
    hcert, hkey = sign("https", ["mta-sts.fresh.example"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    host = "mta-sts.fresh.example"
    web.policies[host] = policy("enforce", "mx.fresh.example", max_age=3600)
    b, bsink, _ = receiver(datadir, servers, sign, ["mx.fresh.example"])
    knot = start_knot(datadir, {"fresh.example": zone("fresh.example", "127.0.0.1", "1")})
    servers.append(knot)
    clock = os.path.join(datadir, "clock")
    t0 = int(time.time())
    set_clock(clock, t0)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    a = sender(datadir, knot, b.port, ca, web.port)
    servers.append(a)

    def send(rcpt, t):
        set_clock(clock, t)
        submit(a.port, "alice@example.com", [rcpt], data=message(rcpt))
        assert wait_for(lambda: rcpt in by_rcpt(a, "delivery")), a.output()
        return by_rcpt(a, "delivery")[rcpt].get("mta_sts")

    assert send("u1@fresh.example", t0) == "enforce"
    assert web.fetches == {host: 1}
    # half of max_age passed: the refresh starts, and the mail does not
    # wait for it (the server takes 4 s; the new policy says testing)
    web.policies[host] = policy("testing", "mx.fresh.example", max_age=3600)
    web.delay = 4
    assert send("u2@fresh.example", t0 + 1900) == "enforce"
    assert "policy id 1 expires in 1700s: refreshing" in a.output()
    assert wait_for(lambda: "policy id 1 refreshed, mode testing" in a.output()), a.output()
    assert web.fetches == {host: 2}
    web.delay = 0
    # the refreshed policy is in force, and cached on disk
    assert send("u3@fresh.example", t0 + 2000) == "testing"
    assert web.fetches == {host: 2}
    with open(os.path.join(datadir, "spool", "mta-sts", "fresh.example")) as f:
        assert "mode: testing" in f.read()
    # the server is gone: the refresh (due at t0 + 1900 + 1800) fails and
    # the policy fetched at t0 + 1900 stays in force until t0 + 5500
    web.stop()
    servers.remove(web)
    assert send("u4@fresh.example", t0 + 3800) == "testing"
    assert wait_for(lambda: "the cached policy (id 1) stays in force" in a.output()), \
        a.output()
    assert send("u5@fresh.example", t0 + 3900) == "testing"
    # tried again after 5 minutes, failing again, still in force
    assert send("u6@fresh.example", t0 + 5450) == "testing"
    assert wait_for(lambda: a.output().count("the cached policy (id 1) stays in force") == 2), \
        a.output()
    assert send("u7@fresh.example", t0 + 5501) is None
    assert "cached policy (id 1) expired" in a.output()
    stop_clean(a)
    assert len(sink_files(bsink)) == 7


def test_expired_cache_files_are_removed(datadir, servers, monkeypatch):
    """SPOOL/mta-sts holds the file of a policy that expired, one valid for
    an hour, one valid for a day, a temporary file left by an interrupted
    write and a damaged file: at start the expired and temporary files
    go, the others stay. With the relay's clock an hour and a bit later,
    the hourly pass removes the policy that expired meanwhile (its domain
    not mailed), and keeps the ones still valid (one written after the
    start) and the damaged one."""
    knot = start_knot(datadir, {"unused.example": soa("unused.example")})
    servers.append(knot)
    clock = os.path.join(datadir, "clock")
    t0 = int(time.time())
    set_clock(clock, t0)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    cache = os.path.join(datadir, "spool", "mta-sts")
    os.makedirs(cache)

    def put(name, fetched, max_age):
        with open(os.path.join(cache, name), "w") as f:
            f.write("id 1\nfetched %d\n\n%s" % (fetched, policy("enforce", "mx." + name,
                                                                 max_age=max_age)))
    put("gone.example", t0 - 7200, 3600)
    put("hour.example", t0 - 60, 3600)
    put("day.example", t0 - 60, 86400)
    put("half.example.tmp.999999999", t0, 86400)
    with open(os.path.join(cache, "damaged.example"), "w") as f:
        f.write("id 1\nfetched x\n\n")
    ca, _ = make_ca(datadir)
    a = sender(datadir, knot, free_port(), ca, free_port())
    servers.append(a)
    assert wait_for(lambda: "mta-sts: 2 expired cache files removed" in a.output()), a.output()
    assert "mta-sts: 2 cached policies" in a.output(), a.output()
    assert sorted(os.listdir(cache)) == ["damaged.example", "day.example", "hour.example"]
    # a valid file the relay has no entry for (judged by its contents)
    put("later.example", t0, 86400)
    # the hour passes: hour.example expires; the pass comes an hour after the start
    set_clock(clock, t0 + 3599)
    time.sleep(2)
    assert sorted(os.listdir(cache)) == ["damaged.example", "day.example", "hour.example",
                                         "later.example"]
    set_clock(clock, t0 + 3601)
    assert wait_for(lambda: "mta-sts: 1 expired cache files removed" in a.output()), a.output()
    assert sorted(os.listdir(cache)) == ["damaged.example", "day.example", "later.example"]
    stop_clean(a)


def test_policy_past_max_age_is_fetched_again(datadir, servers, monkeypatch):
    """The relay's clock (MAILREP_NOW=file:PATH) moves past max_age: the
    cached policy expires, and the next mail waits for a new fetch, which
    brings the policy the server now has."""
    ca, sign = make_ca(datadir)
    hcert, hkey = sign("https", ["mta-sts.aging.example"])
    web = PolicyServer(hcert, hkey)
    servers.append(web)
    web.policies["mta-sts.aging.example"] = policy("enforce", "mx.aging.example", max_age=3600)
    b, bsink, _ = receiver(datadir, servers, sign, ["mx.aging.example"])
    knot = start_knot(datadir, {"aging.example": zone("aging.example", "127.0.0.1", "1")})
    servers.append(knot)
    clock = os.path.join(datadir, "clock")
    t0 = int(time.time())
    set_clock(clock, t0)
    monkeypatch.setenv("MAILREP_NOW", "file:" + clock)
    a = sender(datadir, knot, b.port, ca, web.port)
    servers.append(a)
    submit(a.port, "alice@example.com", ["u1@aging.example"], data=message("u1"))
    assert wait_for(lambda: "u1@aging.example" in by_rcpt(a, "delivery")), a.output()
    assert web.fetches == {"mta-sts.aging.example": 1}
    # before the refresh is due (half of max_age) nothing is fetched again
    set_clock(clock, t0 + 1000)
    submit(a.port, "alice@example.com", ["u2@aging.example"], data=message("u2"))
    assert wait_for(lambda: "u2@aging.example" in by_rcpt(a, "delivery")), a.output()
    assert web.fetches == {"mta-sts.aging.example": 1}
    # past it, the same id is fetched again, and the new policy applies
    web.policies["mta-sts.aging.example"] = policy("testing", "mx.aging.example", max_age=3600)
    set_clock(clock, t0 + 3601)
    submit(a.port, "alice@example.com", ["u3@aging.example"], data=message("u3"))
    assert wait_for(lambda: "u3@aging.example" in by_rcpt(a, "delivery")), a.output()
    assert web.fetches == {"mta-sts.aging.example": 2}
    assert "cached policy (id 1) expired" in a.output()
    assert by_rcpt(a, "delivery")["u3@aging.example"]["mta_sts"] == "testing"
    stop_clean(a)


def test_a_hanging_policy_server_holds_only_its_domain(datadir, servers):
    """mta-sts.slow.example is a socket at 127.0.0.3 that takes the
    connection and never answers: the fetch runs on a worker thread until
    --mta-sts-timeout, while mail to another domain goes out meanwhile;
    then slow.example's mail goes with no policy and the log says why."""
    import socket
    ca, sign = make_ca(datadir)
    port = free_port()
    hang = socket.socket()
    hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hang.bind(("127.0.0.3", port))
    hang.listen(8)
    try:
        b, bsink, plain = receiver(datadir, servers, sign, ["mx.other.example"])
        z = soa("slow.example") + ('@ MX 10 mx\nmx A 127.0.0.2\nmta-sts A 127.0.0.3\n'
                                   '_mta-sts TXT "v=STSv1; id=1;"\n')
        knot = start_knot(datadir, {"slow.example": z,
                                    "fast.example": zone("fast.example", "127.0.0.2")})
        servers.append(knot)
        a = start_relay(datadir, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                                  "--smtp-port", str(b.port), "--retry-schedule", "1h",
                                  "--tls-ca", ca, "--mta-sts-port", str(port),
                                  "--mta-sts-timeout", "3s"], name="a")
        servers.append(a)
        submit(a.port, "alice@example.com", ["u@slow.example"], data=message("slow"))
        submit(a.port, "alice@example.com", ["u@fast.example"], data=message("fast"))
        assert wait_for(lambda: "u@fast.example" in by_rcpt(a, "delivery")), a.output()
        assert "u@slow.example" not in by_rcpt(a, "delivery")
        assert wait_for(lambda: "u@slow.example" in by_rcpt(a, "delivery")), a.output()
        order = [e["rcpt"] for e in events(a) if e["event"] == "delivery"]
        assert order == ["u@fast.example", "u@slow.example"], order
        assert "mta_sts" not in by_rcpt(a, "delivery")["u@slow.example"]
        assert "mta-sts.slow.example/.well-known/mta-sts.txt failed: timeout; no policy" \
            in a.output()
        stop_clean(a)
        # a relay stopped during a fetch (a 10-minute timeout) still stops at
        # once, cleanly (stop_clean allows 10 s before it kills)
        port2 = free_port()
        hang2 = socket.socket()
        hang2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hang2.bind(("127.0.0.3", port2))
        hang2.listen(8)
        hang2.settimeout(20)
        d = os.path.join(datadir, "stop")
        os.makedirs(d)
        a = start_relay(d, ["--trusted", "127.0.0.1/32", "--resolver", knot.resolver,
                            "--smtp-port", str(b.port), "--tls-ca", ca,
                            "--mta-sts-port", str(port2), "--mta-sts-timeout", "10m"], name="a")
        servers.append(a)
        submit(a.port, "alice@example.com", ["v@slow.example"], data=message("stop"))
        conn, _ = hang2.accept()  # the fetch is under way
        stop_clean(a)
        conn.close()
        hang2.close()
        assert not by_rcpt(a, "delivery")
    finally:
        hang.close()
