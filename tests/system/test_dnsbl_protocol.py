"""Protocol behaviours of `mailrep dnsbl` that deliberately go beyond rbldnsd:
EDNS/BADVERS/TC, TCP (pipelining, idle close), REFUSED/SERVFAIL/FORMERR,
version.bind, RFC 5782 test entries, empty non-terminals (NODATA), ANY modes,
command-line handling."""
import os
import re
import socket
import struct
import subprocess
import time

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

import dnsdiff
from conftest import MAILREP, free_port, start_mailrep_dnsbl

ZONE = "bl.test"

BASE_DATA = """\
$SOA 3600 ns1.example.net. hostmaster.example.net. 42 2h 30m 1w 10m
$NS 3600 ns1.example.net ns2.example.net
$TTL 900
:2:Listed: $
127.0.0.2
10.2.0.0/16
1.2.3.4 :3:one two three
1.2.3.0/24 :4:
!1.2.3.9
"""

# one address with many long TXT values: ~25 * 110 bytes, more than 1232
BIG = "".join("5.5.5.5 :%d:%s\n" % (2 + i % 3, ("entry %02d " % i) + "x" * 100) for i in range(25))

V6_DATA = """\
$SOA 3600 ns1.example.net. hostmaster.example.net. 43 2h 30m 1w 10m
$NS 3600 ns1.example.net
::ffff:7f00:2 :2:v6 test $
2001:db8:1::/48 :3:range
"""

DN_DATA = """\
$SOA 3600 ns1.example.net. hostmaster.example.net. 44 2h 30m 1w 10m
$NS 3600 ns1.example.net
mail.example.com :2:dn listed $
"""


def write(datadir, name, text):
    p = os.path.join(datadir, name)
    with open(p, "w") as f:
        f.write(text)
    os.chmod(p, 0o644)
    return p


def start(datadir, servers, extra=(), zones=None, port=None):
    if zones is None:
        zones = ["%s:ip4set:%s" % (ZONE, write(datadir, "bl.txt", BASE_DATA + BIG)),
                 "v6.test:ip6trie:%s" % write(datadir, "v6.txt", V6_DATA),
                 "dn.test:dnset:%s" % write(datadir, "dn.txt", DN_DATA)]
    srv = start_mailrep_dnsbl(list(extra) + zones, datadir, port=port)
    servers.append(srv)
    return srv


def q(srv, name, rdtype="A", rdclass="IN", **kw):
    with dnsdiff.Client(srv.port) as c:
        r = c.query(name, rdtype, rdclass, timeout=2.0, **kw)
    assert r is not None, "no UDP reply to %s %s" % (name, rdtype)
    return r


def rev(ip):
    return ".".join(reversed(ip.split("."))) + "." + ZONE + "."


def rrs(msg, section="answer", rdtype=None):
    out = []
    for rrset in getattr(msg, section):
        if rdtype is not None and rrset.rdtype != dns.rdatatype.from_text(rdtype):
            continue
        for rd in rrset:
            out.append((rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()))
    return out


def tcp_exchange(sock, wire):
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    return read_tcp_msg(sock)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def read_tcp_msg(sock):
    (ln,) = struct.unpack("!H", recv_exact(sock, 2))
    return recv_exact(sock, ln)


# --------------------------------------------------------------------------
# EDNS
# --------------------------------------------------------------------------

def test_edns_query_gets_opt_and_plain_query_does_not(datadir, servers):
    srv = start(datadir, servers)
    r = q(srv, rev("1.2.3.4"), "A", use_edns=0, payload=1232)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.edns == 0, "EDNS query must get an OPT RR (version 0) back, got edns=%r" % r.edns
    assert [x[2] for x in rrs(r, rdtype="A")] == ["127.0.0.3"]
    r = q(srv, rev("1.2.3.4"), "A")
    assert r.edns == -1, "query without OPT must get a reply without OPT"
    assert r.flags & dns.flags.AA, "authoritative answer must have AA"


def test_edns_version_1_gets_badvers(datadir, servers):
    srv = start(datadir, servers)
    with dnsdiff.Client(srv.port) as c:
        qm = c.make(rev("1.2.3.4"), "A")
        qm.use_edns(edns=1, payload=1232)  # make_query(use_edns=1) gives version 0 in dnspython 2.3
        assert qm.edns == 1
        raw = c.raw(qm.to_wire(), timeout=2)
    assert raw is not None, "no reply to EDNS version 1 query"
    r = dnsdiff.parse(raw)
    assert r.rcode() == dns.rcode.BADVERS, "EDNS version 1 must give BADVERS, got %s" % dns.rcode.to_text(r.rcode())
    assert r.edns >= 0, "BADVERS reply must carry an OPT RR"
    assert not r.answer, "BADVERS reply must not carry answers"


@pytest.mark.parametrize("payload,limit", [(512, 512), (100, 512), (1232, 1232), (4096, 1232)])
def test_udp_reply_never_exceeds_advertised_size(datadir, servers, payload, limit):
    srv = start(datadir, servers)
    with dnsdiff.Client(srv.port) as c:
        for rdtype in ("TXT", "ANY"):
            qm = c.make(rev("5.5.5.5"), rdtype, use_edns=0, payload=payload)
            raw = c.raw(qm.to_wire(), timeout=2)
            assert raw is not None, "no reply"
            r = dnsdiff.parse(raw)
            assert len(raw) <= limit, "%s reply %d bytes > limit %d (payload %d)" % (rdtype, len(raw), limit, payload)
            assert r.flags & dns.flags.TC, "answer of ~2.8 KB cannot fit %d bytes: TC must be set" % limit
            assert r.edns >= 0, "EDNS query must get OPT even when truncated"


def test_plain_udp_truncates_at_512_and_tcp_gives_everything(datadir, servers):
    srv = start(datadir, servers)
    with dnsdiff.Client(srv.port) as c:
        raw = c.raw(c.make(rev("5.5.5.5"), "TXT").to_wire(), timeout=2)
    assert raw is not None
    assert len(raw) <= 512, "plain UDP reply of %d bytes" % len(raw)
    assert dnsdiff.parse(raw).flags & dns.flags.TC, "TC must be set when the answer does not fit 512 bytes"
    r = dns.query.tcp(dns.message.make_query(rev("5.5.5.5"), "TXT"), "127.0.0.1", port=srv.port, timeout=3)
    txts = rrs(r, rdtype="TXT")
    assert len(txts) == 25, "TCP must return all 25 TXT records, got %d" % len(txts)
    assert not r.flags & dns.flags.TC
    assert any("entry 07 xxx" in t[2] for t in txts)


def test_udp_max_option_allows_large_replies(datadir, servers):
    srv = start(datadir, servers, extra=["--udp-max", "4096"])
    with dnsdiff.Client(srv.port) as c:
        raw = c.raw(c.make(rev("5.5.5.5"), "TXT", use_edns=0, payload=4096).to_wire(), timeout=2)
        assert raw is not None
        r = dnsdiff.parse(raw)
        assert not r.flags & dns.flags.TC, "with --udp-max 4096 the ~2.8 KB answer fits"
        assert len(rrs(r, rdtype="TXT")) == 25
        assert 1232 < len(raw) <= 4096
        # the advertised buffer still limits the reply
        raw = c.raw(c.make(rev("5.5.5.5"), "TXT", use_edns=0, payload=1500).to_wire(), timeout=2)
        assert raw is not None and len(raw) <= 1500 and dnsdiff.parse(raw).flags & dns.flags.TC


# --------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------

def test_tcp_and_udp_on_every_bind_address(datadir, servers):
    port2 = free_port()
    srv = start(datadir, servers, extra=["-b", "127.0.0.1/%d" % port2])
    for port in (srv.port, port2):
        with dnsdiff.Client(port) as c:
            r = c.query(rev("1.2.3.4"), "TXT", timeout=2)
        assert r is not None, "no UDP answer on port %d" % port
        assert [x[2] for x in rrs(r)] == ['"one two three"']
        r = dns.query.tcp(dns.message.make_query(rev("1.2.3.4"), "TXT"), "127.0.0.1", port=port, timeout=3)
        assert [x[2] for x in rrs(r)] == ['"one two three"'], "TCP on port %d" % port
        assert r.flags & dns.flags.AA


def test_tcp_pipelined_queries_answered_in_order(datadir, servers):
    srv = start(datadir, servers)
    names = [("1.2.3.4", "127.0.0.3"), ("1.2.3.7", "127.0.0.4"), ("1.2.3.9", None), ("127.0.0.2", "127.0.0.2"),
             ("9.9.9.9", None), ("10.2.200.1", "127.0.0.2")] * 5
    msgs = []
    for i, (ip, _) in enumerate(names):
        m = dns.message.make_query(rev(ip), "A")
        m.id = 1000 + i
        msgs.append(m)
    blob = b"".join(struct.pack("!H", len(w)) + w for w in (m.to_wire() for m in msgs))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(blob)  # all queries in one write
        for i, (ip, want) in enumerate(names):
            r = dns.message.from_wire(read_tcp_msg(s))
            assert r.id == 1000 + i, "reply %d has id %d: replies out of order" % (i, r.id)
            got = [x[2] for x in rrs(r, rdtype="A")]
            if want is None:
                assert r.rcode() == dns.rcode.NXDOMAIN, "%s should be NXDOMAIN" % ip
            else:
                assert got == [want], "%s: %s" % (ip, got)


def test_tcp_idle_connection_closed(datadir, servers):
    srv = start(datadir, servers, extra=["--tcp-idle", "2"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        # a query right away works and does not close the connection
        r = dns.message.from_wire(tcp_exchange(s, dns.message.make_query(rev("1.2.3.4"), "A").to_wire()))
        assert r.rcode() == dns.rcode.NOERROR
        time.sleep(1.0)
        r = dns.message.from_wire(tcp_exchange(s, dns.message.make_query(rev("127.0.0.2"), "A").to_wire()))
        assert r.rcode() == dns.rcode.NOERROR, "connection must stay usable within --tcp-idle"
        t0 = time.time()
        try:
            data = s.recv(1)
        except ConnectionResetError:
            data = b""
        waited = time.time() - t0
    assert data == b"", "server sent data on an idle connection"
    assert 1.0 <= waited <= 6.0, "idle connection closed after %.1f s, expected ~2 s" % waited


def test_tcp_default_idle_is_not_immediate(datadir, servers):
    srv = start(datadir, servers)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        time.sleep(3)
        r = dns.message.from_wire(tcp_exchange(s, dns.message.make_query(rev("1.2.3.4"), "A").to_wire()))
        assert r.rcode() == dns.rcode.NOERROR, "default --tcp-idle is 10 s; connection closed after 3 s"


# --------------------------------------------------------------------------
# rcodes
# --------------------------------------------------------------------------

def test_refused_outside_zones(datadir, servers):
    srv = start(datadir, servers)
    for name in ("example.org.", "test.", "xbl.test.", "4.3.2.1.bl.test.example."):
        r = q(srv, name, "A")
        assert r.rcode() == dns.rcode.REFUSED, "%s: %s" % (name, dns.rcode.to_text(r.rcode()))
        assert not r.answer


@pytest.mark.parametrize("broken", ["missing", "corrupt-gzip"])
def test_servfail_for_zone_that_failed_to_load(datadir, servers, broken):
    if broken == "missing":
        bad = os.path.join(datadir, "does-not-exist.txt")
    else:
        import gzip
        data = gzip.compress(b"1.2.3.4\n" * 1000)
        data = data[:-8] + b"\0\0\0\0\xff\xff\xff\xff"  # wrong CRC and length
        bad = os.path.join(datadir, "corrupt.gz")
        with open(bad, "wb") as f:
            f.write(data)
        os.chmod(bad, 0o644)
    good = write(datadir, "good.txt", BASE_DATA)
    srv = start(datadir, servers, extra=["-q"], zones=["bad.test:ip4set:" + bad, "good.test:ip4set:" + good])
    deadline = time.time() + 5
    while True:
        r = q(srv, "4.3.2.1.good.test.", "A")
        if r.rcode() == dns.rcode.NOERROR or time.time() > deadline:
            break
        time.sleep(0.1)
    assert [x[2] for x in rrs(r)] == ["127.0.0.3"], "good zone must serve while the other failed"
    for name in ("4.3.2.1.bad.test.", "bad.test."):
        r = q(srv, name, "A")
        assert r.rcode() == dns.rcode.SERVFAIL, "%s: %s" % (name, dns.rcode.to_text(r.rcode()))
    assert os.path.basename(bad) in srv.output(), "log must name the file that failed:\n" + srv.output()


def _raw_udp(port, wire):
    with dnsdiff.Client(port) as c:
        return c.raw(wire, timeout=2)


@pytest.mark.parametrize("what", ["qdcount0", "truncated-name", "truncated-qtype", "label-past-end"])
def test_formerr_for_malformed_queries(datadir, servers, what):
    srv = start(datadir, servers)
    hdr1 = struct.pack("!HHHHHH", 0x4242, 0x0000, 1, 0, 0, 0)
    wire = {
        "qdcount0": struct.pack("!HHHHHH", 0x4242, 0x0000, 0, 0, 0, 0),
        "truncated-name": hdr1 + b"\x01" + b"4\x01" + b"3",
        "truncated-qtype": hdr1 + b"\x02bl\x04test\x00\x00",
        "label-past-end": hdr1 + b"\x3fabc",
    }[what]
    raw = _raw_udp(srv.port, wire)
    assert raw is not None, "no reply to malformed query (%s)" % what
    assert len(raw) >= 12
    qid, flags = struct.unpack("!HH", raw[:4])
    assert qid == 0x4242, "reply id %#x" % qid
    assert flags & 0x8000, "QR must be set"
    assert flags & 0x000F == dns.rcode.FORMERR, "rcode %d, expected FORMERR" % (flags & 0xF)


def test_server_still_answers_after_garbage(datadir, servers):
    srv = start(datadir, servers)
    with dnsdiff.Client(srv.port) as c:
        for junk in (b"", b"\x00", b"\xff" * 11, os.urandom(40), b"\x12\x34\x80\x00" + b"\x00" * 8):
            c.sock.send(junk)
        r = c.query(rev("1.2.3.4"), "A", timeout=2)
    assert r is not None and r.rcode() == dns.rcode.NOERROR


# --------------------------------------------------------------------------
# version.bind
# --------------------------------------------------------------------------

@pytest.mark.parametrize("vflags,expect", [([], "full"), (["-v"], "short"), (["-v", "-v"], "refused"),
                                           (["-vv"], "refused")])
def test_version_bind(datadir, servers, vflags, expect):
    srv = start(datadir, servers, extra=vflags)
    r = q(srv, "version.bind.", "TXT", "CH")
    if expect == "refused":
        assert r.rcode() == dns.rcode.REFUSED, "-vv: version.bind must be REFUSED, got %s" % dns.rcode.to_text(r.rcode())
        assert not r.answer
        return
    assert r.rcode() == dns.rcode.NOERROR
    txt = [x[2] for x in rrs(r, rdtype="TXT")]
    assert len(txt) == 1, txt
    if expect == "full":
        assert re.match(r'^"mailrep \S+', txt[0]), "version.bind text %s must be 'mailrep <version>'" % txt[0]
    else:
        assert txt[0] == '"mailrep"', "with -v version.bind must be exactly 'mailrep', got %s" % txt[0]


# --------------------------------------------------------------------------
# data semantics that differ from rbldnsd or matter for RFC 5782
# --------------------------------------------------------------------------

def test_rfc5782_test_entries_ipv4(datadir, servers):
    srv = start(datadir, servers)
    r = q(srv, "2.0.0.127.%s." % ZONE, "A")
    assert r.rcode() == dns.rcode.NOERROR and [x[2] for x in rrs(r)] == ["127.0.0.2"]
    r = q(srv, "2.0.0.127.%s." % ZONE, "TXT")
    assert [x[2] for x in rrs(r)] == ['"Listed: 127.0.0.2"']
    r = q(srv, "1.0.0.127.%s." % ZONE, "A")
    assert r.rcode() == dns.rcode.NXDOMAIN, "127.0.0.1 is not listed: must be NXDOMAIN"
    assert rrs(r, "authority", "SOA"), "NXDOMAIN must carry the SOA"


def test_rfc5782_test_entries_ipv6(datadir, servers):
    srv = start(datadir, servers)
    listed = dnsdiff.ip6_rev(0xFFFF7F000002) + ".v6.test."
    assert listed.startswith("2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.")
    r = q(srv, listed, "A")
    assert r.rcode() == dns.rcode.NOERROR and [x[2] for x in rrs(r)] == ["127.0.0.2"], r.to_text()
    r = q(srv, dnsdiff.ip6_rev(0xFFFF7F000001) + ".v6.test.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = q(srv, dnsdiff.ip6_rev((0x20010db80001 << 80) | 77) + ".v6.test.", "A")
    assert [x[2] for x in rrs(r)] == ["127.0.0.3"]


@pytest.mark.parametrize("name,zone", [("0.0.127", ZONE), ("0.127", ZONE), ("127", ZONE), ("2.10", ZONE),
                                       ("10", ZONE), ("3.2.1", ZONE), ("example.com", "dn.test"),
                                       ("com", "dn.test")])
def test_empty_non_terminal_is_nodata(datadir, servers, name, zone):
    srv = start(datadir, servers)
    for rdtype in ("A", "TXT", "ANY"):
        r = q(srv, "%s.%s." % (name, zone), rdtype)
        assert r.rcode() == dns.rcode.NOERROR, "%s.%s %s: empty non-terminal must be NOERROR, got %s" % (
            name, zone, rdtype, dns.rcode.to_text(r.rcode()))
        assert not r.answer, "empty non-terminal must have no answer: %s" % r.answer
        assert rrs(r, "authority", "SOA"), "NODATA must carry the SOA in authority"
        assert r.flags & dns.flags.AA


@pytest.mark.parametrize("name,zone", [("3.10", ZONE), ("1.0.128", ZONE), ("11", ZONE), ("4.2.1", ZONE),
                                       ("other.com", "dn.test"), ("org", "dn.test")])
def test_names_without_data_below_are_nxdomain(datadir, servers, name, zone):
    srv = start(datadir, servers)
    r = q(srv, "%s.%s." % (name, zone), "A")
    assert r.rcode() == dns.rcode.NXDOMAIN, "%s.%s has nothing below it: NXDOMAIN expected, got %s" % (
        name, zone, dns.rcode.to_text(r.rcode()))


def test_any_default_returns_a_and_txt(datadir, servers):
    srv = start(datadir, servers)
    r = q(srv, rev("1.2.3.4"), "ANY")
    types = sorted({x[1] for x in rrs(r)})
    assert types == ["A", "TXT"], "default ANY must answer like rbldnsd (A and TXT), got %s" % types


def test_any_minimal_returns_one_rrset(datadir, servers):
    srv = start(datadir, servers, extra=["--any", "minimal"])
    r = q(srv, rev("1.2.3.4"), "ANY")
    assert r.rcode() == dns.rcode.NOERROR
    types = {x[1] for x in rrs(r)}
    assert len(types) == 1, "--any minimal (RFC 8482) must give one RRset, got %s" % sorted(types)
    assert rrs(r), "--any minimal must still answer"
    # A and TXT queries are unaffected
    assert [x[2] for x in rrs(q(srv, rev("1.2.3.4"), "TXT"))] == ['"one two three"']
    assert r.flags & dns.flags.AA


def test_any_option_rejects_unknown_mode(datadir):
    p = subprocess.run([MAILREP, "dnsbl", "-n", "-b", "127.0.0.1/%d" % free_port(), "--any", "bogus",
                        "x.test:ip4set:" + write(datadir, "a.txt", "1.2.3.4\n")],
                       capture_output=True, timeout=10)
    assert p.returncode != 0, "--any bogus must be rejected"


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

@pytest.mark.parametrize("opt,named", [(["-Z"], "Z"), (["-x", "foo.so"], "x"), (["-X", "arg"], "X"),
                                       (["--no-such-option"], "no-such-option")])
def test_unsupported_option_fails_naming_it(datadir, opt, named):
    data = write(datadir, "a.txt", "1.2.3.4\n")
    p = subprocess.run([MAILREP, "dnsbl", "-n", "-b", "127.0.0.1/%d" % free_port()] + opt +
                       ["x.test:ip4set:" + data], capture_output=True, timeout=10)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0, "%s must make it exit non-zero; output:\n%s" % (opt, out)
    assert re.search(r"(-%s\b|'%s'|\b%s\b)" % (re.escape(named), re.escape(named), re.escape(named)), out), \
        "error message must name the option %s:\n%s" % (opt[0], out)


def test_help_exits_zero():
    p = subprocess.run([MAILREP, "dnsbl", "--help"], capture_output=True, timeout=10)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, "--help exit status %d:\n%s" % (p.returncode, out)
    assert "-b" in out, "--help must describe the options:\n" + out


def test_missing_zone_data_at_startup_is_fatal_without_q(datadir):
    p = subprocess.run([MAILREP, "dnsbl", "-n", "-b", "127.0.0.1/%d" % free_port(),
                        "x.test:ip4set:" + os.path.join(datadir, "nonexistent.txt")],
                       capture_output=True, timeout=15)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0, "like rbldnsd, a failed initial load without -q must be fatal:\n" + out
    assert "nonexistent.txt" in out, "the message must name the file:\n" + out
