"""Differential tests: `mailrep dnsbl` must answer exactly like rbldnsd.

Random (seeded) data of every dataset type is written once per module; one
mailrep and one rbldnsd instance serve all zones from the same files; each
test sends a few thousand random queries (A, TXT, ANY, MX, SOA, NS, AAAA)
to both over UDP without EDNS and requires identical normalised replies
(rcode, AA, TC, answer multiset, authority set, additional set without OPT).

The only tolerated difference is the deliberate one for empty non-terminals
(mailrep: NODATA with SOA, rbldnsd: NXDOMAIN), and only for names the
generators know can be empty non-terminals.

Set DNSBL_DIFF_SELFTEST=1 to run rbldnsd against a second rbldnsd instead of
mailrep (validates the harness itself).
"""
import os
import random
import shutil

import pytest

import dnsdiff
from conftest import MAILREP, start_mailrep_dnsbl, start_rbldnsd, world_readable_dir

SELFTEST = os.environ.get("DNSBL_DIFF_SELFTEST") == "1"
QUERIES = int(os.environ.get("DNSBL_DIFF_QUERIES", "3000"))


def _start_pair(args, tmpdir):
    """Starts (ours, rbldnsd) with the same arguments."""
    if SELFTEST:
        ours = start_rbldnsd(args, tmpdir)
    else:
        if not os.path.exists(MAILREP):
            pytest.fail("server binary %s does not exist" % MAILREP)
        ours = start_mailrep_dnsbl(args, tmpdir)
    try:
        theirs = start_rbldnsd(args, tmpdir)
    except Exception:
        ours.stop()
        raise
    return ours, theirs


# zone -> dataset generator (seeded separately so each zone is reproducible)
GENERATORS = {
    "ip4set.test": lambda r: dnsdiff.gen_ip4set(r, n=500, files=2, gz_last=True),
    # CR is not whitespace for rbldnsd: "1.2.3.4\r" is invalid, "text\r" keeps the CR
    "crlf.test": lambda r: dnsdiff.gen_ip4set(r, n=150, files=1, gz_last=False, crlf=True),
    "ip4set-b.test": lambda r: dnsdiff.gen_ip4set(r, n=400, files=2, gz_last=False,
                                                  base_template=True, maxrange=True),
    "ip4tset.test": lambda r: dnsdiff.gen_ip4tset(r, n=600),
    "ip4trie.test": lambda r: dnsdiff.gen_ip4trie(r, n=400),
    "ip6trie.test": lambda r: dnsdiff.gen_ip6trie(r, n=300),
    "ip6tset.test": lambda r: dnsdiff.gen_ip6tset(r, n=300),
    "dnset.test": lambda r: dnsdiff.gen_dnset(r, n=400),
    "generic.test": lambda r: dnsdiff.gen_generic(r, n=200, zone_ns=["ns1.generic.test", "ns2.generic.test"]),
    "combined.test": lambda r: dnsdiff.gen_combined(r),
}
SEEDS = {z: 1000 + i for i, z in enumerate(sorted(GENERATORS))}


class Setup:
    pass


@pytest.fixture(scope="module")
def world():
    tmp = world_readable_dir("mailrep-diff-")
    st = Setup()
    st.tmp = tmp
    st.datasets = {}
    st.zones = {}        # zone -> [Dataset] (in command-line order)
    args = []
    for zone in sorted(GENERATORS):
        ds = GENERATORS[zone](random.Random(SEEDS[zone]))
        spec = ds.write(tmp, prefix=zone + "-")
        st.datasets[zone] = (ds, spec)
        st.zones[zone] = [ds]
        args.append("%s:%s" % (zone, spec))
    # a zone built from several datasets, reusing the ip4set dataset object
    # (same spec string => same dataset in rbldnsd)
    rng = random.Random(77)
    g2 = dnsdiff.gen_generic(rng, n=40)
    d2 = dnsdiff.gen_dnset(rng, n=60)
    g2spec = g2.write(tmp, prefix="mix-")
    d2spec = d2.write(tmp, prefix="mix-")
    ip4ds, ip4spec = st.datasets["ip4set.test"]
    args += ["mix.test:" + ip4spec, "mix.test:" + g2spec, "mix.test:" + d2spec]
    st.zones["mix.test"] = [ip4ds, g2, d2]
    # a nested zone: more specific zone must win regardless of order
    t2 = dnsdiff.gen_ip4tset(random.Random(78), n=100)
    t2spec = t2.write(tmp, prefix="nested-")
    args.append("inner.dnset.test:" + t2spec)
    st.zones["inner.dnset.test"] = [t2]
    # per-zone ACLs (all test queries come from 127.0.0.1)
    for name, action in (("acl-empty.test", ":empty"), ("acl-txt.test", ":7:acl listed $ for $1"),
                         ("acl-refuse.test", ":refuse"), ("acl-pass.test", ":pass")):
        acl = dnsdiff.gen_acl(rng, action)
        aspec = acl.write(tmp, prefix=name + "-")
        args += ["%s:%s" % (name, ip4spec), "%s:%s" % (name, aspec)]
        st.zones[name] = [ip4ds]
    st.args = args
    st.ours, st.theirs = _start_pair(args, tmp)
    yield st
    st.ours.stop()
    st.theirs.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _alive(world):
    for what, srv in (("mailrep", world.ours), ("rbldnsd", world.theirs)):
        rc = srv.proc.poll()
        assert rc is None, "%s exited with status %s; log tail:\n%s" % (what, rc, srv.output()[-4000:])


def _run(world, zone, n, seed, extra_names=(), min_positive=0.05, min_negative=0.05):
    _alive(world)
    rng = random.Random(seed)
    queries = []
    zd = [(zone, ds) for ds in world.zones[zone]]
    per = n // len(zd)
    for z, ds in zd:
        queries += dnsdiff.make_queries(rng, ds, z, per)
    queries += [(zone + ".", t) for t in dnsdiff.QTYPES]
    for nm in extra_names:
        queries += [(nm, t) for t in ("A", "TXT", "ANY", "SOA", "NS")]
    mism, stats = dnsdiff.compare_servers(world.ours.port, world.theirs.port, queries,
                                          may_be_ent=dnsdiff.ent_checker(zd))
    _alive(world)
    assert not mism, "zone %s: %s\nstats=%s\nmailrep log tail:\n%s" % (
        zone, dnsdiff.format_mismatches(mism), stats, world.ours.output()[-3000:])
    total = stats["total"]
    # the generated queries must exercise both listed and unlisted answers,
    # and rbldnsd's 512-byte limit must not hide many comparisons
    assert stats["positive"] >= min_positive * total, "too few positive answers: %s" % stats
    assert stats["nxdomain"] >= min_negative * total, "too few NXDOMAIN answers: %s" % stats
    assert stats["big"] <= 0.02 * total, "too many oversized rbldnsd replies skipped: %s" % stats
    return stats


@pytest.mark.parametrize("zone", sorted(GENERATORS) + ["mix.test", "inner.dnset.test"])
def test_zone_matches_rbldnsd(world, zone):
    _run(world, zone, QUERIES, SEEDS.get(zone, 5) * 7 + 1)


@pytest.mark.parametrize("zone", ["acl-empty.test", "acl-txt.test", "acl-refuse.test", "acl-pass.test"])
def test_acl_zone_matches_rbldnsd(world, zone):
    # acl-refuse answers REFUSED to everything, so no positives/NXDOMAIN there;
    # acl-txt lists everything, so there are no NXDOMAINs.
    _run(world, zone, 600, 4242, min_positive=0.0 if zone in ("acl-refuse.test", "acl-empty.test") else 0.05,
         min_negative=0.0 if zone in ("acl-refuse.test", "acl-txt.test") else 0.05)


def test_outside_zones_and_apexes_match_rbldnsd(world):
    names = ["test.", "example.org.", "nosuch.test.", "ip4set.test.x.", ".", "dnset.test.",
             "INNER.dnset.TEST.", "x.inner.dnset.test.", "mix.test.", "combined.test."]
    queries = [(n, t) for n in names for t in dnsdiff.QTYPES]
    mism, stats = dnsdiff.compare_servers(world.ours.port, world.theirs.port, queries)
    _alive(world)
    assert not mism, dnsdiff.format_mismatches(mism)


def test_options_match_rbldnsd(datadir, servers):
    """-e (host bits in CIDRs accepted), -t default:min:max TTL clamping and
    -a (no NS in authority of positive answers)."""
    rng = random.Random(99)
    ds = dnsdiff.gen_ip4set(rng, n=300, files=1, gz_last=False)
    text = ds.files[0][1]
    extra = "\n".join(["$TTL 10", "10.1.2.3/24 :3:host bits set", "10.9.8.7/16", "11.22.33.44/30 big ttl",
                       "!10.1.2.0/31"]) + "\n"
    ds.files = [("opt.txt", text + extra, False)]
    spec = ds.write(datadir)
    args = ["-e", "-t", "300:60:3600", "-a", "opts.test:" + spec,
            "nottl.test:" + dnsdiff.gen_ip4tset(random.Random(98), n=50).write(datadir, "nt-")]
    ours, theirs = _start_pair(args, datadir)
    servers += [ours, theirs]
    rng = random.Random(100)
    queries = dnsdiff.make_queries(rng, ds, "opts.test", 1500)
    queries += [(dnsdiff.ip4_rev(dnsdiff.ip4_int(a)) + ".opts.test.", t)
                for a in ("10.1.2.3", "10.1.2.0", "10.1.2.200", "10.9.1.1", "11.22.33.45", "11.22.33.48")
                for t in ("A", "TXT", "ANY")]
    queries += [("opts.test.", t) for t in dnsdiff.QTYPES] + [("nottl.test.", t) for t in dnsdiff.QTYPES]
    mism, stats = dnsdiff.compare_servers(ours.port, theirs.port, queries,
                                          may_be_ent=dnsdiff.ent_checker([("opts.test", ds)]))
    assert not mism, dnsdiff.format_mismatches(mism)
    assert stats["positive"] > 100, stats


@pytest.mark.parametrize("zone", ["ip4set.test", "ip4tset.test", "ip4trie.test", "combined.test"])
def test_ip4_zone_ipv6_mapped_queries_match_rbldnsd(world, zone):
    """rbldnsd maps 32-nibble queries for ::ffff:a.b.c.d and 2002:a.b.c.d::/48
    (6to4) onto IPv4 datasets; mailrep must do the same."""
    rng = random.Random(31337)
    ds = world.zones[zone][0]
    queries = []
    suffix = "." + zone + "."
    while len(queries) < 600:
        rel = ds.name(rng)
        if zone == "combined.test":
            rel = rel[: -len(".proxies")] if rel.endswith(".proxies") else rel
        labels = rel.split(".")
        if len(labels) != 4 or not all(l.isdigit() and int(l) <= 255 for l in labels):
            continue
        v4 = dnsdiff.ip4_int(".".join(reversed([str(int(l)) for l in labels])))
        if rng.random() < 0.5:
            n = 0xFFFF00000000 | v4
        else:
            n = (0x2002 << 112) | (v4 << 80) | rng.getrandbits(80)
        queries.append((dnsdiff.ip6_rev(n) + suffix, rng.choice(["A", "TXT", "ANY"])))
    mism, stats = dnsdiff.compare_servers(world.ours.port, world.theirs.port, queries)
    _alive(world)
    assert not mism, dnsdiff.format_mismatches(mism)
    assert stats["positive"] > 60, stats


def test_tcp_answers_equal_udp_answers(world):
    """Over TCP mailrep must give the same (small) answers as over UDP."""
    if SELFTEST:
        pytest.skip("rbldnsd has no TCP")
    import socket
    import struct
    rng = random.Random(2024)
    queries = []
    for zone in ("ip4set.test", "dnset.test", "ip6trie.test", "generic.test", "combined.test"):
        queries += dnsdiff.make_queries(rng, world.zones[zone][0], zone, 80)
    _alive(world)
    diffs = []
    with dnsdiff.Client(world.ours.port) as c, \
            socket.create_connection(("127.0.0.1", world.ours.port), timeout=5) as s:
        udp = c.query_many(queries)
        for (name, t), u in zip(queries, udp):
            if u is not None and len(u) > 450:
                continue
            wire = c.make(name, t).to_wire()
            s.sendall(struct.pack("!H", len(wire)) + wire)
            hdr = b""
            while len(hdr) < 2:
                chunk = s.recv(2 - len(hdr))
                assert chunk, "TCP connection closed by server"
                hdr += chunk
            (ln,) = struct.unpack("!H", hdr)
            body = b""
            while len(body) < ln:
                chunk = s.recv(ln - len(body))
                assert chunk, "TCP connection closed mid-message"
                body += chunk
            nu, nt = dnsdiff.normalise(u), dnsdiff.normalise(body)
            if nu != nt:
                diffs.append({"query": (name, t), "ours": nt, "theirs": nu})
    assert not diffs, "TCP ('ours') vs UDP ('rbldnsd' = our UDP answer):\n" + dnsdiff.format_mismatches(diffs)
