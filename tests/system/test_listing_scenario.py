"""The scenario test: a simulated world of allocations, ASes and trap hits over
five simulated weeks, driven through `mailrep impact import` and `mailrep
delist` with MAILREP_NOW. At every checkpoint the listings that the engine
exports are compared with listings computed here, independently of the engine,
from UCEPROTECT's published rules:

  L1  an IP with an impact in the last 7 days; expires 7 days after the last.
  L2  the allocation (longest prefix of the table, else the /24) once the
      impacts of its L1-listed IPs in the last 7 days reach T(/n): 1 for /27
      and smaller, 2 /26, 3 /25, 4 /24, T(/n-1) = T(/n) + T(/n+2) above.
  L3  the AS once its L1 impacts in the last 7 days are >= 50 and SPAMSCORE =
      impacts / IPs announced * 100000, rounded to one decimal, is >= 50.

Whitelisted and reserved addresses never count; impacts before an operator
delisting no longer count for that IP. Some impacts are imported a day ahead
of their time stamp and must only count once the clock reaches them.
"""
import ipaddress
import json
import random
from decimal import ROUND_HALF_UP, Decimal

from listing_helpers import DAY, iso, parse_iso, run, write_impacts, xml_listings

START = parse_iso("2026-05-04T00:00:00Z")
WEEK = 7 * DAY

ALLOCATIONS = [  # CIDR, name
    ("45.10.0.0/26", "shop-a"),
    ("45.10.1.0/25", "shop-b"),
    ("45.10.4.0/23", "isp-c"),
    ("45.20.0.0/22", "hoster-d"),
    ("45.20.8.0/28", "tiny-e"),
    ("45.40.0.0/21", "colo-f"),
]
PREFIX2AS = [  # address, length, AS field as CAIDA writes it
    ("45.10.0.0", 16, "65010"),
    ("45.20.0.0", 14, "65020"),
    ("45.30.0.0", 20, "65030"),
    ("45.40.0.0", 22, "65040"),
    ("45.40.8.0", 22, "65040"),
    ("45.50.0.0", 16, "65050_65051"),
]
WHITELIST = ["45.10.0.7", "45.30.0.16/28"]
RESERVED_SOURCES = ["10.4.4.4", "192.168.7.7", "127.0.0.1", "172.16.9.9"]
DELIST_IP, DELIST_AT = "45.30.1.5", START + 12 * DAY + 12 * 3600


# ---- the independent model ---------------------------------------------------

def threshold(n):
    base = {24: 4, 25: 3, 26: 2}
    if n >= 27:
        return 1
    if n in base:
        return base[n]
    return threshold(n + 1) + threshold(n + 3)


ALLOC_NETS = [(ipaddress.ip_network(c), name) for c, name in ALLOCATIONS]
AS_NETS = [(ipaddress.ip_network("%s/%d" % (a, l)), int(f.split("_")[0].split(",")[0]))
           for a, l, f in PREFIX2AS]
WL_NETS = [ipaddress.ip_network(w) for w in WHITELIST]


def longest(nets, ip):
    best = None
    for net, v in nets:
        if ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, v)
    return best


def as_size(asn):
    nets = [n for n, a in AS_NETS if a == asn]
    for i, a in enumerate(nets):  # the world has no overlaps within an AS
        assert not any(a.overlaps(b) for b in nets[i + 1:])
    return sum(n.num_addresses for n in nets)


def spamscore(n, total):
    return (Decimal(n) * 100000 / Decimal(total)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def l3_need(total):
    n = 50
    while spamscore(n, total) < 50:
        n += 1
    return n


def never(ip):
    a = ipaddress.ip_address(ip)
    if ip in RESERVED_SOURCES:
        return True
    return any(a.version == 4 and a in w for w in WL_NETS)


def model(impacts, now, floors):
    """{(level, key): (expires, impacts)} at instant `now`."""
    window = [(t, ip) for t, ip in impacts if now - WEEK < t <= now and not never(ip)]
    per_ip = {}
    for t, ip in window:
        if t > floors.get(ip, -1):
            per_ip.setdefault(ip, []).append(t)
    out = {}
    l2, l3 = {}, {}
    for ip, ts in per_ip.items():
        key = str(ipaddress.ip_address(ip))
        out[(1, key)] = (max(ts) + WEEK, len(ts))
        a = ipaddress.ip_address(ip)
        if a.version != 4:
            continue
        alloc = longest(ALLOC_NETS, a)
        net = alloc[0] if alloc else ipaddress.ip_network("%s/24" % a, strict=False)
        l2.setdefault(net, []).extend(t + WEEK for t in ts)
        asn = longest(AS_NETS, a)
        if asn:
            l3.setdefault(asn[1], []).extend(t + WEEK for t in ts)
    for net, ends in l2.items():
        need = threshold(net.prefixlen)
        if len(ends) >= need:
            out[(2, str(net))] = (sorted(ends, reverse=True)[need - 1], len(ends))
    for asn, ends in l3.items():
        need = l3_need(as_size(asn))
        if len(ends) >= need:
            out[(3, "AS%d" % asn)] = (sorted(ends, reverse=True)[need - 1], len(ends))
    return out


# ---- the world's traffic -------------------------------------------------------

def traffic(rng):
    """(time, ip) trap hits over five weeks."""
    hits = []

    def burst(day0, days, n, pick):
        for _ in range(n):
            hits.append((START + day0 * DAY + rng.randrange(days * DAY), pick()))

    spread = ["45.%d.%d.%d" % (rng.choice([10, 11, 20, 21, 30, 40, 50]), rng.randrange(12),
                               rng.randrange(1, 255)) for _ in range(300)]
    for day in range(35):
        burst(day, 1, rng.randrange(5, 25), lambda: rng.choice(spread))
        burst(day, 1, 2, lambda: rng.choice(RESERVED_SOURCES))
    burst(3, 1, 2, lambda: "45.10.0.%d" % rng.randrange(1, 60))            # shop-a, T=2
    burst(5, 2, 5, lambda: "45.10.1.%d" % rng.randrange(1, 127))           # shop-b, T=3
    burst(8, 3, 70, lambda: "45.30.%d.%d" % (rng.randrange(16), rng.randrange(1, 255)))
    burst(9, 1, 3, lambda: DELIST_IP)
    burst(9, 1, 6, lambda: "45.30.0.%d" % rng.randrange(16, 32))           # whitelisted
    burst(15, 2, 56, lambda: "45.40.%d.%d" % (rng.choice([0, 1, 2, 3, 8, 9]), rng.randrange(256)))
    burst(20, 3, 140, lambda: "45.20.%d.%d" % (rng.randrange(64), rng.randrange(256)))
    burst(21, 1, 9, lambda: "45.20.%d.%d" % (rng.randrange(4), rng.randrange(256)))  # hoster-d
    burst(25, 1, 1, lambda: "45.20.8.3")                                    # tiny-e, T=1
    burst(26, 3, 30, lambda: "45.10.%d.%d" % (rng.choice([4, 5]), rng.randrange(256)))  # isp-c
    burst(28, 2, 6, lambda: "2a01:4f8:%x::%x" % (rng.randrange(4), rng.randrange(1, 9)))
    burst(30, 1, 4, lambda: DELIST_IP)
    return sorted(hits)


def rbldnsd_entries(listings):
    """The entries an ip4set export of these listings must have."""
    out = {"127.0.0.2"}
    for level, key in listings:
        if level == 1 and ":" not in key:
            out.add(key)
        elif level == 2:
            out.add(key)
        elif level == 3:
            out |= {str(n) for n, asn in AS_NETS if "AS%d" % asn == key}
    return out


def test_five_weeks_match_the_model(tmp_path):
    rng = random.Random(20260504)
    db = str(tmp_path / "world.db")
    alloc = tmp_path / "alloc.txt"
    alloc.write_text("# allocations\n" + "".join("%s %s\n" % a for a in ALLOCATIONS))
    p2as = tmp_path / "prefix2as.txt"
    p2as.write_text("".join("%s\t%d\t%s\n" % p for p in PREFIX2AS))
    wl = tmp_path / "whitelist.txt"
    wl.write_text("\n".join(WHITELIST) + "\n")
    policy = ["--prefixes", str(alloc), "--asn-map", str(p2as), "--whitelist", str(wl)]

    hits = traffic(rng)
    checkpoints = sorted({START + d * DAY + rng.randrange(DAY) for d in range(36)} | {DELIST_AT})
    floors = {}
    imported_upto = START - 1
    seen_levels, seen_expiry = set(), False
    previous = {}
    for n, now in enumerate(checkpoints):
        # import everything up to a day ahead; future stamps must wait for the clock
        upto = now + (DAY if n % 3 == 0 else 0)
        batch = [h for h in hits if imported_upto < h[0] <= upto]
        imported_upto = max(imported_upto, upto)
        f = tmp_path / ("batch-%d.tsv" % n)
        write_impacts(f, batch)
        run(["impact", "import", "--db", db, str(f)] + policy, now=now)
        if now == DELIST_AT:
            rc, out, _ = run(["delist", "--db", db, DELIST_IP], now=now, check=False)
            assert rc == 0, out
            floors[DELIST_IP] = now
        out = tmp_path / "listings.xml"
        run(["export", "--db", db, "--format", "xml", "--out", str(out)], now=now)
        got = {k: (parse_iso(v["expires"]), int(v["impacts"])) for k, v in xml_listings(out).items()}
        want = model(hits, now, floors)
        if got != want:
            lines = ["at %s:" % iso(now)]
            for k in sorted(set(got) | set(want)):
                if got.get(k) != want.get(k):
                    g, w = got.get(k), want.get(k)
                    lines.append("  %s: engine %s, model %s" % (
                        k, g and (iso(g[0]), g[1]), w and (iso(w[0]), w[1])))
            raise AssertionError("\n".join(lines))
        # the rbldnsd export holds exactly the model's IPv4 entries
        bl = tmp_path / "bl.ip4set"
        run(["export", "--db", db, "--format", "rbldnsd", "--out", str(bl)], now=now)
        entries = {l.split()[0] for l in bl.read_text().splitlines() if l and l[0] not in "#:"}
        assert entries == rbldnsd_entries(want), iso(now)
        seen_levels |= {k[0] for k in want}
        seen_expiry |= bool(set(previous) - set(want))
        previous = want

    # the world exercised every level, expiry, the delisting and the whitelist
    assert seen_levels == {1, 2, 3}
    assert seen_expiry
    now = checkpoints[-1]
    final = model(hits, now, floors)
    stats = json.loads(run(["stats", "--db", db, "--json"], now=now)[1])
    for level in (1, 2, 3):
        assert stats["listed"][str(level)] == len([k for k in final if k[0] == level])
    # lookups agree with the model about which levels cover an address
    sample = sorted({ip for _, ip in hits})
    for ip in rng.sample(sample, 25) + [DELIST_IP, "45.30.0.20", "45.20.8.3"]:
        j = json.loads(run(["lookup", "--db", db, ip, "--json"], now=now)[1])
        a = ipaddress.ip_address(ip)
        expect = set()
        for (level, key), _ in final.items():
            if level == 1 and key == str(a):
                expect.add((1, key))
            elif level == 2 and a.version == 4 and a in ipaddress.ip_network(key):
                expect.add((2, key))
            elif level == 3 and a.version == 4 and any(
                    a in n and "AS%d" % asn == key for n, asn in AS_NETS):
                expect.add((3, key))
        assert {(lv["level"], lv["key"]) for lv in j["levels"]} == expect, ip
