"""Reloading (SIGHUP, -c interval, broken files), the -s stats file, SIGTERM,
AXFR (content like `rbldnsd -d`, access control) and a knotd secondary that
transfers a zone from us and must then answer like us."""
import gzip
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.xfr
import dns.zone
import pytest

import dnsdiff
from conftest import MAILREP, free_port, start_mailrep_dnsbl
from knotd import Knot

ZONE = "bl.test"
HEADER = """\
$SOA 3600 ns1.example.net. hostmaster.example.net. 0 2h 30m 1w 10m
$NS 3600 ns1.example.net ns2.example.net
"""

_mtime_counter = [0]


def write(path, text, gz=False):
    """Writes atomically (temp file + rename) with a fresh, distinct mtime."""
    data = text.encode()
    if gz:
        data = gzip.compress(data)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    _mtime_counter[0] += 1
    t = time.time() - 100000 + _mtime_counter[0] * 10
    os.utime(tmp, (t, t))
    os.replace(tmp, path)
    return path


def rev(ip, zone=ZONE):
    return ".".join(reversed(ip.split("."))) + "." + zone + "."


def ask(port, name, rdtype="A", timeout=2.0):
    with dnsdiff.Client(port) as c:
        return c.query(name, rdtype, timeout=timeout)


def a_of(r):
    return sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)


def txt_of(r):
    return sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out after %.1fs waiting for %s (last=%r)" % (timeout, what, last))


def version_data(v, n=0):
    """Data version v: marker 1.1.1.1 has TXT 'version v', 7.7.7.v listed,
    and n filler entries so that loading takes a little time."""
    lines = [HEADER, "1.1.1.1 :2:version %d" % v, "7.7.7.%d" % v, "2.2.2.2 :3:stable"]
    for i in range(n):
        lines.append("10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255))
    return "\n".join(lines) + "\n"


def marker(port):
    r = ask(port, rev("1.1.1.1"), "TXT")
    if r is None or r.rcode() != dns.rcode.NOERROR:
        return None
    return txt_of(r)


# --------------------------------------------------------------------------
# reload
# --------------------------------------------------------------------------

def test_sighup_reloads(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    assert marker(srv.port) == ['"version 1"']
    write(path, version_data(2))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: marker(srv.port) == ['"version 2"'], 5, "version 2 after SIGHUP")
    assert ask(srv.port, rev("7.7.7.1")).rcode() == dns.rcode.NXDOMAIN, "old entry must be gone"
    assert a_of(ask(srv.port, rev("7.7.7.2"))) == ["127.0.0.2"]


def test_no_reload_without_signal_when_check_disabled(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    write(path, version_data(2))
    time.sleep(2.5)
    assert marker(srv.port) == ['"version 1"'], "-c 0 disables automatic reloads"


def test_check_interval_reloads_on_mtime_change(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1))
    srv = start_mailrep_dnsbl(["-c", "1", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    assert marker(srv.port) == ['"version 1"']
    write(path, version_data(2))
    wait_for(lambda: marker(srv.port) == ['"version 2"'], 6, "version 2 via -c 1")
    # gzip-compressed replacement is picked up as well
    write(path, version_data(3), gz=True)
    wait_for(lambda: marker(srv.port) == ['"version 3"'], 6, "gzipped version 3 via -c 1")


@pytest.mark.parametrize("breakage", ["corrupt-gzip", "bad-crc", "missing-file"])
def test_broken_reload_keeps_old_data(datadir, servers, breakage):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    assert marker(srv.port) == ['"version 1"']
    logpos = len(srv.output())
    if breakage in ("corrupt-gzip", "bad-crc"):
        good = gzip.compress(version_data(2, n=2000).encode())
        if breakage == "corrupt-gzip":  # deflate data damaged in the second half
            bad = good[: len(good) // 2] + bytes(b ^ 0x55 for b in good[len(good) // 2: -8]) + good[-8:]
        else:  # intact deflate stream, wrong CRC32 in the trailer
            bad = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
        with open(path + ".tmp", "wb") as f:
            f.write(bad)
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
    else:
        os.rename(path, path + ".away")
    srv.signal(signal.SIGHUP)
    reason = re.compile(r"(?i)error|fail|corrupt|crc|invalid|unable|cannot|can't|no such|not found|truncat|bad")
    base = os.path.basename(path)

    def failure_logged():
        return [l for l in srv.output()[logpos:].splitlines() if base in l and reason.search(l)]

    try:
        wait_for(failure_logged, 5, "a log line naming %s and a reason" % base)
    except AssertionError as e:
        raise AssertionError("%s; log since SIGHUP:\n%s" % (e, srv.output()[logpos:]))
    for _ in range(3):
        r = ask(srv.port, rev("1.1.1.1"), "TXT")
        assert r is not None and r.rcode() == dns.rcode.NOERROR, \
            "old data must keep serving after a failed reload, got %s" % (r and dns.rcode.to_text(r.rcode()))
        assert txt_of(r) == ['"version 1"']
    # a good file afterwards is loaded again
    write(path, version_data(4))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: marker(srv.port) == ['"version 4"'], 5, "recovery to version 4")


def test_invalid_lines_are_skipped_with_file_and_line(datadir, servers):
    path = write(os.path.join(datadir, "lines.txt"),
                 HEADER + "1.2.3.4\n300.1.1.1\n5.6.7.8\n1.2.3.4/33\n")
    srv = start_mailrep_dnsbl(["%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    assert a_of(ask(srv.port, rev("1.2.3.4"))) == ["127.0.0.2"]
    assert a_of(ask(srv.port, rev("5.6.7.8"))) == ["127.0.0.2"], "lines after an invalid one must load"
    out = srv.output()
    for line in (4, 6):
        assert re.search(r"lines\.txt(:%d\b|\(%d\))" % (line, line), out), \
            "warning must name lines.txt line %d:\n%s" % (line, out)


def test_queries_during_reloads_never_fail(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1, n=60000))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    stop = threading.Event()
    problems = []
    counts = {"n": 0}

    def hammer():
        names = [(rev("2.2.2.2"), "A", ["127.0.0.3"]), (rev("10.0.1.7"), "A", ["127.0.0.2"]),
                 (rev("1.1.1.1"), "TXT", None)]
        with dnsdiff.Client(srv.port, timeout=1.0) as c:
            i = 0
            while not stop.is_set():
                name, t, want = names[i % len(names)]
                i += 1
                r = c.query(name, t, timeout=1.0)
                counts["n"] += 1
                if r is None:
                    problems.append("timeout for %s %s" % (name, t))
                elif r.rcode() != dns.rcode.NOERROR:
                    problems.append("%s for %s %s" % (dns.rcode.to_text(r.rcode()), name, t))
                elif want is not None and a_of(r) != want:
                    problems.append("wrong answer %s for %s" % (a_of(r), name))
                elif want is None and not txt_of(r):
                    problems.append("no TXT for %s" % name)

    th = threading.Thread(target=hammer)
    th.start()
    try:
        wait_for(lambda: counts["n"] >= 50, 10, "hammer thread to start")
        for v in range(2, 7):
            write(path, version_data(v, n=60000))
            before = counts["n"]
            srv.signal(signal.SIGHUP)
            wait_for(lambda: marker(srv.port) == ['"version %d"' % v], 15, "version %d" % v)
            wait_for(lambda: counts["n"] >= before + 50, 10, "hammer queries after reload %d" % v)
    finally:
        stop.set()
        th.join(10)
    assert counts["n"] > 300, "hammer thread sent only %d queries" % counts["n"]
    assert not problems, "%d failed queries out of %d during reloads, first: %s" % (
        len(problems), counts["n"], problems[:10])


def test_sigterm_exits_zero(datadir):
    path = write(os.path.join(datadir, "bl.txt"), version_data(1))
    srv = start_mailrep_dnsbl(["%s:ip4set:%s" % (ZONE, path)], datadir)
    try:
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(10)
    finally:
        srv.stop()
    assert rc == 0, "SIGTERM must exit with status 0, got %r:\n%s" % (rc, srv.output())


# --------------------------------------------------------------------------
# statistics file
# --------------------------------------------------------------------------

STAT_RE = re.compile(r"^(\S+):(\d+):(\d+):(\d+):(\d+):(\d+)$")


def parse_stats_line(line):
    parts = line.split()
    assert parts and re.fullmatch(r"\d+", parts[0]), "bad stats line %r" % line
    tuples = {}
    for p in parts[1:]:
        m = STAT_RE.match(p)
        assert m, "bad stats tuple %r in line %r" % (p, line)
        tuples[m.group(1)] = tuple(int(x) for x in m.groups()[1:])
    return int(parts[0]), tuples


def test_stats_file(datadir, servers):
    a = write(os.path.join(datadir, "a.txt"), HEADER + "1.2.3.4\n1.2.3.5\n1.2.3.6\n")
    b = write(os.path.join(datadir, "b.txt"), HEADER + "5.6.7.8\n")
    stats = os.path.join(datadir, "stats.txt")
    # the server may write it after dropping privileges: make it writable
    open(stats, "w").close()
    os.chmod(stats, 0o666)
    srv = start_mailrep_dnsbl(["-c", "1", "-s", stats, "a.test:ip4set:" + a, "b.test:ip4set:" + b], datadir)
    servers.append(srv)
    sent = {"a.test": [0, 0], "b.test": [0, 0]}   # bytes in, bytes out
    plan = [("a.test", "1.2.3.4", True), ("a.test", "1.2.3.5", True), ("a.test", "1.2.3.6", True),
            ("a.test", "1.2.3.4", True), ("a.test", "1.2.3.5", True),
            ("a.test", "9.9.9.1", False), ("a.test", "9.9.9.2", False), ("a.test", "9.9.9.3", False),
            ("b.test", "5.6.7.8", True), ("b.test", "5.6.7.8", True)]
    with dnsdiff.Client(srv.port) as c:
        for zone, ip, listed in plan:
            wire = c.make(rev(ip, zone), "A").to_wire()
            raw = c.raw(wire, timeout=2)
            assert raw is not None
            assert dnsdiff.parse(raw).rcode() == (dns.rcode.NOERROR if listed else dns.rcode.NXDOMAIN)
            sent[zone][0] += len(wire)
            sent[zone][1] += len(raw)
        c.raw(c.make("example.org.", "A").to_wire(), timeout=2)  # outside any zone
    t_sent = time.time()

    def final_line():
        if not os.path.exists(stats):
            return None
        with open(stats) as f:
            lines = [l.strip() for l in f if l.strip()]
        for l in reversed(lines):
            ts, tup = parse_stats_line(l)
            if tup.get("a.test", (0,))[0] >= 8 and tup.get("b.test", (0,))[0] >= 2:
                return ts, tup
        return None

    ts, tup = wait_for(final_line, 6, "stats line with the queries")
    with open(stats) as f:
        for l in f:
            if l.strip():
                parse_stats_line(l.strip())  # every line is well-formed
    assert abs(ts - t_sent) < 10, "timestamp %d is not now (%d)" % (ts, t_sent)
    assert set(tup) == {"a.test", "b.test", "*"}, "zones in stats line: %s" % sorted(tup)
    with open(stats) as f:
        last = [l for l in f if l.strip()][-1].split()
    assert last[-1].startswith("*:"), "total tuple must come last: %s" % last
    assert tup["a.test"] == (8, 5, 3, sent["a.test"][0], sent["a.test"][1]), \
        "a.test qtot:qok:qnxd:bin:bout %s, expected %s" % (tup["a.test"], (8, 5, 3) + tuple(sent["a.test"]))
    assert tup["b.test"] == (2, 2, 0, sent["b.test"][0], sent["b.test"][1]), tup["b.test"]
    for i in range(5):
        assert tup["*"][i] >= tup["a.test"][i] + tup["b.test"][i], "total %s < sum of zones" % (tup["*"],)
    assert tup["*"][0] >= 11, "the query outside any zone counts in the total"


# --------------------------------------------------------------------------
# AXFR
# --------------------------------------------------------------------------

AXFR_DATA = {
    "ip4set": HEADER + """\
$TTL 1h
:3:Listed $
1.2.3.4
1.2.3.5 :5:
1.2.3.6 :6:own text
1.2.4.0/24
!1.2.4.7
1.3/16 :7:sixteen
1.2.5.8-10 other $ text
1.2.6.0/23
9.9.9.9 :2:
""",
    "ip4tset": HEADER + ":4:tset\n1.2.3.4\n1.2.3.5\n5.6.7.8\n",
    "dnset": HEADER + "mail.example.com :3:dn $\n*.spam.example :4\n.both.example\n!x.both.example\n",
    "generic": HEADER + "@ A 127.0.0.8\nwww 300 TXT \"hello world\"\n@ MX 10 mx.example.net\nhost A 192.0.2.1\n",
}


def rbldnsd_dump(zone, dtype, path):
    """`rbldnsd -d` output (only ever run on these small fixed files)."""
    p = subprocess.run(["/usr/sbin/rbldnsd", "-d", "-b", "127.0.0.1/1", "%s:%s:%s" % (zone, dtype, path)],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def rrset_tuples(rrsets):
    out = []
    for rrset in rrsets:
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype != dns.rdatatype.TXT:
                text = text.lower()
            out.append((rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, text))
    return out


def axfr_records(port, zone, timeout=10):
    """All records of an AXFR, in order, one tuple per RR."""
    out = []
    for msg in dns.query.xfr("127.0.0.1", zone, port=port, timeout=timeout, lifetime=timeout, relativize=False):
        out += rrset_tuples(msg.answer)
    return out


def axfr_rcode(port, zone):
    """Sends an AXFR over TCP and returns the rcode of the first reply."""
    q = dns.message.make_query(zone, "AXFR")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        w = q.to_wire()
        s.sendall(struct.pack("!H", len(w)) + w)
        hdr = b""
        while len(hdr) < 2:
            chunk = s.recv(2 - len(hdr))
            assert chunk, "connection closed without a reply to AXFR"
            hdr += chunk
        (ln,) = struct.unpack("!H", hdr)
        body = b""
        while len(body) < ln:
            chunk = s.recv(ln - len(body))
            assert chunk, "short AXFR reply"
            body += chunk
    return dns.message.from_wire(body).rcode()


@pytest.mark.parametrize("dtype", sorted(AXFR_DATA))
def test_axfr_matches_rbldnsd_dump(datadir, servers, dtype):
    zone = "%s.test" % dtype
    path = write(os.path.join(datadir, dtype + ".txt"), AXFR_DATA[dtype])
    srv = start_mailrep_dnsbl(["%s:%s:%s" % (zone, dtype, path)], datadir)
    servers.append(srv)
    recs = axfr_records(srv.port, zone)
    assert recs, "empty transfer"
    assert recs[0][1] == "SOA" and recs[-1][1] == "SOA", "AXFR must start and end with the SOA: %s ... %s" % (
        recs[0], recs[-1])
    assert recs[0] == recs[-1], "first and last SOA differ"
    assert sum(1 for r in recs if r[1] == "SOA") == 2, "exactly two SOA records expected"
    ours = recs[:-1]
    z = dns.zone.from_text(rbldnsd_dump(zone, dtype, path), origin=zone + ".", relativize=False,
                           check_origin=False)
    want = []
    for name, node in z.nodes.items():
        want += rrset_tuples(_rs(name, rs) for rs in node.rdatasets)
    # duplicates in AXFR would be a bug as well
    assert len(ours) == len(set(ours)), "duplicate records in AXFR: %s" % sorted(
        r for r in ours if ours.count(r) > 1)
    missing = sorted(set(want) - set(ours))
    extra = sorted(set(ours) - set(want))
    assert not missing and not extra, "AXFR differs from rbldnsd -d:\nmissing %s\nextra %s" % (missing, extra)


@pytest.mark.parametrize("dtype", sorted(AXFR_DATA))
def test_dump_option_matches_rbldnsd(datadir, dtype):
    """`mailrep dnsbl -d zone:type:file` dumps like `rbldnsd -d` (same records)."""
    zone = "%s.test" % dtype
    path = write(os.path.join(datadir, dtype + ".txt"), AXFR_DATA[dtype])
    p = subprocess.run([MAILREP, "dnsbl", "-d", "%s:%s:%s" % (zone, dtype, path)], capture_output=True, timeout=20)
    assert p.returncode == 0, "-d exit %d: %s" % (p.returncode, p.stderr.decode("utf-8", "replace"))

    def records(text):
        z = dns.zone.from_text(text, origin=zone + ".", relativize=False, check_origin=False)
        out = []
        for name, node in z.nodes.items():
            out += rrset_tuples(_rs(name, rs) for rs in node.rdatasets)
        return set(out)

    ours = records(p.stdout.decode())
    want = records(rbldnsd_dump(zone, dtype, path))
    assert ours == want, "-d output differs:\nmissing %s\nextra %s" % (sorted(want - ours), sorted(ours - want))


def _rs(name, rdataset):
    import dns.rrset
    rr = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rr.update(rdataset)
    return rr


def _axfr_server(datadir, servers, extra):
    path = write(os.path.join(datadir, "bl.txt"), AXFR_DATA["ip4set"])
    srv = start_mailrep_dnsbl(list(extra) + ["%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    return srv


def test_axfr_contains_expected_names(datadir, servers):
    srv = _axfr_server(datadir, servers, [])
    recs = {(r[0], r[1], r[3]) for r in axfr_records(srv.port, ZONE)}
    for name, t, rd in [("4.3.2.1.bl.test.", "A", "127.0.0.3"), ("*.4.2.1.bl.test.", "A", "127.0.0.3"),
                        ("7.4.2.1.bl.test.", "CNAME", "excluded.bl.test."), ("*.3.1.bl.test.", "A", "127.0.0.7"),
                        ("*.6.2.1.bl.test.", "A", "127.0.0.3"), ("*.7.2.1.bl.test.", "A", "127.0.0.3"),
                        ("9.5.2.1.bl.test.", "TXT", '"other 1.2.5.9 text"'), ("bl.test.", "NS", "ns1.example.net.")]:
        assert (name, t, rd) in recs, "AXFR lacks %s %s %s" % (name, t, rd)


def test_axfr_allowed_network(datadir, servers):
    srv = _axfr_server(datadir, servers, ["--axfr-allow", "10.0.0.0/8", "--axfr-allow", "127.0.0.0/8"])
    assert axfr_rcode(srv.port, ZONE) == dns.rcode.NOERROR
    assert axfr_records(srv.port, ZONE)[0][1] == "SOA"


def test_axfr_refused_outside_allowed_networks(datadir, servers):
    srv = _axfr_server(datadir, servers, ["--axfr-allow", "10.0.0.0/8"])
    rc = axfr_rcode(srv.port, ZONE)
    assert rc == dns.rcode.REFUSED, "AXFR from 127.0.0.1 with --axfr-allow 10.0.0.0/8: %s" % dns.rcode.to_text(rc)
    with pytest.raises(dns.xfr.TransferError):
        axfr_records(srv.port, ZONE)
    # normal queries are unaffected
    assert a_of(ask(srv.port, rev("1.2.3.4"))) == ["127.0.0.3"]


def test_no_axfr(datadir, servers):
    srv = _axfr_server(datadir, servers, ["--no-axfr"])
    rc = axfr_rcode(srv.port, ZONE)
    assert rc == dns.rcode.REFUSED, "--no-axfr: %s" % dns.rcode.to_text(rc)


def test_axfr_outside_zones_refused(datadir, servers):
    srv = _axfr_server(datadir, servers, [])
    assert axfr_rcode(srv.port, "example.org.") in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)


# --------------------------------------------------------------------------
# knotd as a secondary
# --------------------------------------------------------------------------

def test_knotd_secondary_answers_like_us(datadir, servers):
    import random
    rng = random.Random(5)
    lines = [HEADER, "$TTL 600", ":2:Listed $"]
    singles = set()
    while len(singles) < 250:
        singles.add("198.51.%d.%d" % (rng.randrange(4), rng.randrange(256)))
    for s in sorted(singles):
        lines.append(s if rng.random() < 0.7 else "%s :%d:" % (s, rng.randint(2, 9)))
    classes = ["203.0.113", "203.0.114", "192.0.2"]
    excluded = ["203.0.113.5", "203.0.113.77", "192.0.2.200"]
    for c in classes:
        lines.append(c + ".0/24 :4:class")
    for e in excluded:
        lines.append("!" + e)
    path = write(os.path.join(datadir, "knot-bl.txt"), "\n".join(lines) + "\n")
    srv = start_mailrep_dnsbl(["%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)

    kport = free_port()
    k = Knot(datadir, srv.port, kport, ZONE)
    proc, knot_log = k.proc, k.log

    try:
        def transferred():
            if proc.poll() is not None:
                raise AssertionError("knotd exited %s:\n%s" % (proc.returncode, knot_log()))
            r = ask(kport, ZONE + ".", "SOA", timeout=0.5)
            return r is not None and r.rcode() == dns.rcode.NOERROR and bool(r.answer)

        try:
            wait_for(transferred, 30, "knotd to transfer %s" % ZONE)
        except AssertionError as e:
            raise AssertionError("%s\nknotd log:\n%s" % (e, knot_log()))
        samples = rng.sample(sorted(singles), 20)
        samples += ["%s.%d" % (c, rng.randrange(256)) for c in classes for _ in range(5)]
        samples += excluded
        samples += ["198.51.9.%d" % i for i in range(5)] + ["203.0.115.1", "8.8.8.8", "198.51.0.0"]
        samples += [s for s in ("198.51.%d.%d" % (rng.randrange(4), rng.randrange(256)) for _ in range(20))
                    if s not in singles][:10]
        assert len(samples) >= 50
        diffs = []
        for ip in samples:
            ours = ask(srv.port, rev(ip))
            theirs = ask(kport, rev(ip))
            assert ours is not None and theirs is not None, "no answer for %s" % ip
            o = (dns.rcode.to_text(ours.rcode()), a_of(ours))
            t = (dns.rcode.to_text(theirs.rcode()), a_of(theirs))
            if o != t:
                diffs.append((ip, o, t))
        assert not diffs, "knotd (secondary) and mailrep differ (ip, ours, knotd): %s" % diffs[:20]
        listed = sum(1 for ip in samples if a_of(ask(srv.port, rev(ip))))
        assert 30 <= listed < len(samples), "sample should mix listed and unlisted: %d listed" % listed
    finally:
        k.stop()
