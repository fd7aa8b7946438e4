"""The exports in the programs that read them: the rbldnsd export is served,
unchanged, by `mailrep dnsbl` and by Debian's rbldnsd (loopback only), and the
two must give the same answers, which must be the listings; the BIND export
parses as a zone whose names answer like the DNS servers; the XML export is
well-formed and matches the store."""
import ipaddress
import os

import dns.message
import dns.query
import dns.rcode
import dns.zone

from conftest import start_mailrep_dnsbl, start_rbldnsd
from listing_helpers import parse_iso, run, write_impacts, xml_listings

T0 = parse_iso("2026-04-06T00:00:00Z")
URL = "https://bl.example.org/lookup?ip="


def build_store(tmp):
    db = os.path.join(tmp, "store.db")
    asn = os.path.join(tmp, "p2as.txt")
    with open(asn, "w") as f:
        f.write("11.50.0.0\t18\t64999\n")
    rows = [(T0, "11.40.0.%d" % i) for i in range(1, 5)]          # L2: the /24 fallback
    rows += [(T0, "11.41.0.1")]                                    # L1 only
    rows += [(T0 + i, "11.50.%d.7" % i) for i in range(50)]        # L3: AS64999
    rows += [(T0, "2a01:4f8::1"), (T0, "2a01:4f8:0:1::2")]         # IPv6 L1
    rows += [(T0, "10.9.9.9"), (T0, "127.0.0.1")]                  # reserved: never
    imp = os.path.join(tmp, "imp.tsv")
    write_impacts(imp, rows)
    run(["impact", "import", "--db", db, imp, "--asn-map", asn], now=T0 + 60)
    return db


def rev4(ip):
    return ".".join(reversed(ip.split(".")))


def rev6(ip):
    return ".".join(reversed(ipaddress.ip_address(ip).exploded.replace(":", "")))


def ask(port, name, rdtype):
    q = dns.message.make_query(name, rdtype)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    rrs = sorted(str(rd) for rrset in r.answer for rd in rrset)
    return dns.rcode.to_text(r.rcode()), rrs


# address -> the A answers expected from the ip4set zone
EXPECT4 = {
    "11.41.0.1": ["127.0.0.2"],
    "11.40.0.200": ["127.0.0.3"],
    "11.50.60.1": ["127.0.0.4"],
    "11.50.3.7": ["127.0.0.2"],       # its own /32 wins over the AS range
    "127.0.0.2": ["127.0.0.2"],
    "127.0.0.1": [],
    "10.9.9.9": [],
    "11.41.0.2": [],
    "11.50.64.1": [],                 # just outside the AS's /18
}
EXPECT6 = {"2a01:4f8::1": ["127.0.0.2"], "2a01:4f8:0:1::2": ["127.0.0.2"],
           "::ffff:7f00:2": ["127.0.0.2"], "::ffff:7f00:1": [], "2a01:4f8::2": []}


def test_rbldnsd_export_serves_identically(datadir, servers):
    db = build_store(datadir)
    v4 = os.path.join(datadir, "bl.ip4set")
    v6 = os.path.join(datadir, "bl.ip6trie")
    run(["export", "--db", db, "--format", "rbldnsd", "--out", v4, "--lookup-url", URL], now=T0 + 120)
    run(["export", "--db", db, "--format", "rbldnsd6", "--out", v6, "--lookup-url", URL], now=T0 + 120)
    for p in (v4, v6):
        assert os.stat(p).st_mode & 0o004, "export must be world-readable for rbldnsd"
    zones = ["bl.test:ip4set:" + v4, "bl6.test:ip6trie:" + v6]
    ours = start_mailrep_dnsbl(zones, datadir)
    servers.append(ours)
    theirs = start_rbldnsd(zones, datadir)
    servers.append(theirs)
    for ip, want in EXPECT4.items():
        name = rev4(ip) + ".bl.test."
        a_ours, a_theirs = ask(ours.port, name, "A"), ask(theirs.port, name, "A")
        assert a_ours == a_theirs, (ip, a_ours, a_theirs)
        assert a_ours[1] == want, (ip, a_ours)
        assert a_ours[0] == ("NOERROR" if want else "NXDOMAIN"), (ip, a_ours)
        t_ours, t_theirs = ask(ours.port, name, "TXT"), ask(theirs.port, name, "TXT")
        assert t_ours == t_theirs, (ip, t_ours, t_theirs)
        if want and ip != "127.0.0.2":
            assert t_ours[1] and (URL + ip) in t_ours[1][0], t_ours
    for ip, want in EXPECT6.items():
        name = rev6(ip) + ".bl6.test."
        a_ours, a_theirs = ask(ours.port, name, "A"), ask(theirs.port, name, "A")
        assert a_ours == a_theirs, (ip, a_ours, a_theirs)
        assert a_ours[1] == want, (ip, a_ours)


def test_bind_export_is_a_zone_that_answers_alike(tmp_path):
    db = build_store(str(tmp_path))
    out = tmp_path / "bl.zone"
    run(["export", "--db", db, "--format", "bind", "--out", str(out), "--zone", "bl.test",
         "--lookup-url", URL], now=T0 + 120)
    z = dns.zone.from_file(str(out), origin="bl.test.", relativize=False)
    z.check_origin()

    def lookup(name):
        n = dns.name.from_text(name)
        node = z.get_node(n)
        if node is None:  # wildcard: replace labels from the left
            labels = n.labels
            for i in range(1, len(labels) - 2):
                w = dns.name.Name((b"*",) + labels[i:])
                node = z.get_node(w)
                if node is not None:
                    break
        if node is None:
            return []
        rds = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.A)
        return sorted(str(r) for r in rds) if rds else []

    for ip, want in EXPECT4.items():
        assert lookup(rev4(ip) + ".bl.test.") == want, ip
    for ip, want in EXPECT6.items():
        assert lookup(rev6(ip) + ".bl.test.") == want, ip


def test_xml_and_txt_match_the_store(tmp_path):
    db = build_store(str(tmp_path))
    x = tmp_path / "l.xml"
    run(["export", "--db", db, "--format", "xml", "--out", str(x)], now=T0 + 120)
    got = xml_listings(x)
    assert set(got) == {(1, "11.40.0.%d" % i) for i in range(1, 5)} | {(1, "11.41.0.1")} | {
        (1, "11.50.%d.7" % i) for i in range(50)} | {(1, "2a01:4f8::1"), (1, "2a01:4f8:0:1::2"),
                                                    (2, "11.40.0.0/24"), (3, "AS64999")}
    assert got[(3, "AS64999")]["impacts"] == "50"
    assert "SPAMSCORE 305.2" in got[(3, "AS64999")]["reason"]  # 50 / 16384 * 100000 = 305.18
    t = tmp_path / "l.txt"
    run(["export", "--db", db, "--format", "txt", "--out", str(t), "--level", "3"], now=T0 + 120)
    assert [l for l in t.read_text().splitlines() if not l.startswith("#")] == [
        "127.0.0.2", "::ffff:7f00:2", "11.50.0.0/18"]
