"""Differential-testing helpers for `mailrep dnsbl` versus rbldnsd.

* `Client` sends DNS queries over one reused UDP socket (pipelined in windows,
  matched by message id, with retries) and parses the replies with dnspython.
* `normalise()` turns a reply into a plain comparable structure.
* `gen_*()` build random rbldnsd data files of every dataset type from a seeded
  `random.Random`; each returns a `Dataset` that also knows how to produce
  interesting query names (listed, near-listed, random, edge) and which names
  may be empty non-terminals (where mailrep deliberately answers NODATA and
  rbldnsd answers NXDOMAIN).
* `compare_servers()` runs the same queries against two servers and returns
  the list of mismatches; `format_mismatches()` prints them readably.
"""
import gzip
import ipaddress
import os
import random
import socket
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

QTYPES = ["A", "TXT", "ANY", "MX", "SOA", "NS", "AAAA"]
QTYPE_WEIGHTS = [34, 24, 20, 6, 5, 5, 6]


# ---------------------------------------------------------------------------
# Sending queries
# ---------------------------------------------------------------------------

class Client:
    """A UDP DNS client bound to one server; the socket is reused."""

    def __init__(self, port, host="127.0.0.1", timeout=1.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.connect(self.addr)
        self._id = random.Random(port).randrange(65536)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _next_id(self):
        self._id = (self._id + 1) & 0xFFFF
        return self._id

    def raw(self, wire, timeout=None):
        """Sends raw bytes; returns the raw reply bytes or None on timeout.

        Replies whose id does not match the first two bytes of `wire` are
        discarded (stale answers of earlier timed-out queries)."""
        self._drain()
        self.sock.send(wire)
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                return None
            except ConnectionRefusedError:  # ICMP port unreachable: nobody listens
                return None
            if len(wire) < 2 or data[:2] == wire[:2]:
                return data

    def _drain(self):
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(65535)
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.setblocking(True)

    def make(self, qname, rdtype="A", rdclass="IN", **kw):
        q = dns.message.make_query(qname, rdtype, rdclass, **kw)
        q.flags &= ~dns.flags.RD  # like a resolver talking to an authoritative server
        q.id = self._next_id()
        return q

    def query(self, qname, rdtype="A", rdclass="IN", timeout=None, **kw):
        """One query; returns a dns.message.Message (one RR per RRset) or None."""
        q = self.make(qname, rdtype, rdclass, **kw)
        data = self.raw(q.to_wire(), timeout)
        if data is None:
            return None
        return parse(data)

    def query_many(self, queries, window=32, retries=3):
        """Sends [(qname, rdtype[, rdclass])...]; returns the raw replies
        (bytes or None), in order. Pipelines `window` queries at a time."""
        results = [None] * len(queries)
        self._drain()
        for start in range(0, len(queries), window):
            pending = {}
            for i in range(start, min(start + window, len(queries))):
                q = queries[i]
                msg = self.make(q[0], q[1], q[2] if len(q) > 2 else "IN")
                pending[msg.id] = (i, msg.to_wire())
            for _attempt in range(retries + 1):
                if not pending:
                    break
                for _qid, (_i, wire) in list(pending.items()):
                    self.sock.send(wire)
                deadline = time.time() + self.timeout
                while pending:
                    left = deadline - time.time()
                    if left <= 0:
                        break
                    self.sock.settimeout(left)
                    try:
                        data = self.sock.recv(65535)
                    except socket.timeout:
                        break
                    except ConnectionRefusedError:
                        continue
                    if len(data) < 2:
                        continue
                    qid = int.from_bytes(data[:2], "big")
                    if qid in pending:
                        results[pending.pop(qid)[0]] = data
        return results


def parse(data):
    """Parses a reply keeping every RR separately (so per-RR TTLs survive)."""
    return dns.message.from_wire(data, one_rr_per_rrset=True, ignore_trailing=False)


# ---------------------------------------------------------------------------
# Normalising replies
# ---------------------------------------------------------------------------

def _rr_tuples(section, skip_opt=True):
    out = []
    for rrset in section:
        if skip_opt and rrset.rdtype == dns.rdatatype.OPT:
            continue
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype != dns.rdatatype.TXT:
                text = text.lower()
            out.append((rrset.name.to_text().lower(),
                        dns.rdataclass.to_text(rrset.rdclass),
                        dns.rdatatype.to_text(rrset.rdtype),
                        rrset.ttl, text))
    return out


def normalise(reply):
    """Reply (bytes, Message or None) -> dict that compares equal for
    equivalent answers. Answer = sorted multiset; authority and additional =
    sorted sets (rbldnsd rotates NS order); OPT is ignored."""
    if reply is None:
        return {"rcode": "TIMEOUT"}
    if isinstance(reply, (bytes, bytearray)):
        try:
            msg = parse(bytes(reply))
        except Exception as e:  # noqa: BLE001 - report any parse failure
            return {"rcode": "UNPARSABLE", "error": repr(e), "wire": bytes(reply).hex()}
    else:
        msg = reply
    return {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "aa": bool(msg.flags & dns.flags.AA),
        "tc": bool(msg.flags & dns.flags.TC),
        "question": [(r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype)) for r in msg.question],
        "answer": sorted(_rr_tuples(msg.answer)),
        "authority": sorted(set(_rr_tuples(msg.authority))),
        "additional": sorted(set(_rr_tuples(msg.additional))),
    }


def is_ent_variant(ours, theirs):
    """True if ours is the NODATA that mailrep deliberately gives for an
    empty non-terminal where rbldnsd says NXDOMAIN (same SOA authority)."""
    return (theirs.get("rcode") == "NXDOMAIN" and ours.get("rcode") == "NOERROR"
            and not ours.get("answer") and ours.get("aa") == theirs.get("aa")
            and ours.get("authority") == theirs.get("authority")
            and not ours.get("tc"))


# ---------------------------------------------------------------------------
# Comparing two servers
# ---------------------------------------------------------------------------

def compare_servers(port_ours, port_theirs, queries, may_be_ent=None, window=32):
    """Sends every (qname, qtype) to both servers; returns (mismatches, stats).

    may_be_ent(qname) -> bool marks names that may be empty non-terminals:
    for those, mailrep's NODATA vs rbldnsd's NXDOMAIN is accepted (counted in
    stats["ent"]). Replies of rbldnsd longer than 450 bytes are not compared
    (rbldnsd silently drops records past 512 bytes); they are counted in
    stats["big"] so callers can assert that this stays rare."""
    stats = {"total": len(queries), "ent": 0, "big": 0, "positive": 0, "nxdomain": 0}
    mismatches = []
    with Client(port_ours) as co, Client(port_theirs) as ct:
        ours_raw = co.query_many(queries, window=window)
        theirs_raw = ct.query_many(queries, window=window)
    for q, o_raw, t_raw in zip(queries, ours_raw, theirs_raw):
        if t_raw is not None and len(t_raw) > 450:
            stats["big"] += 1
            continue
        o = normalise(o_raw)
        t = normalise(t_raw)
        if t.get("rcode") == "NOERROR" and t.get("answer"):
            stats["positive"] += 1
        if t.get("rcode") == "NXDOMAIN":
            stats["nxdomain"] += 1
        if o == t:
            continue
        if may_be_ent is not None and may_be_ent(q[0]) and is_ent_variant(o, t):
            stats["ent"] += 1
            continue
        mismatches.append({"query": q, "ours": o, "theirs": t})
    return mismatches, stats


def _fmt_reply(r):
    if r.get("rcode") in ("TIMEOUT", "UNPARSABLE"):
        return "    %s %s" % (r["rcode"], r.get("error", ""))
    lines = ["    rcode=%s aa=%s tc=%s q=%s" % (r["rcode"], r["aa"], r["tc"], r["question"])]
    for sec in ("answer", "authority", "additional"):
        for rr in r[sec]:
            lines.append("    %-10s %s %s %s %s %s" % ((sec,) + rr))
    return "\n".join(lines)


def format_mismatches(mismatches, limit=20):
    out = ["%d mismatches (showing %d):" % (len(mismatches), min(limit, len(mismatches)))]
    for m in mismatches[:limit]:
        out.append("query %s %s" % (m["query"][0], m["query"][1]))
        out.append("  ours:")
        out.append(_fmt_reply(m["ours"]))
        out.append("  rbldnsd:")
        out.append(_fmt_reply(m["theirs"]))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Address helpers
# ---------------------------------------------------------------------------

def ip4_str(n):
    return "%d.%d.%d.%d" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def ip4_rev(n):
    return "%d.%d.%d.%d" % (n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >> 24) & 255)


def ip6_rev(n):
    """32-nibble reverse name (no zone) of a 128-bit integer."""
    h = "%032x" % n
    return ".".join(reversed(h))


def ip4_int(s):
    return int(ipaddress.IPv4Address(s))


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------

class Dataset:
    """Random data for one dataset plus query-name generation for it.

    files: list of (basename, text, gzipped)."""

    def __init__(self, dtype, files, names, ent_check, label=None):
        self.dtype = dtype
        self.files = files
        self._names = names          # callable(rng) -> relative query name
        self._ent = ent_check        # callable(relative name) -> bool
        self.label = label or dtype

    def write(self, directory, prefix=""):
        """Writes the files; returns 'type:path1,path2'."""
        paths = []
        for base, text, gz in self.files:
            p = os.path.join(directory, prefix + base)
            data = text.encode("utf-8", "surrogateescape")
            if gz:
                data = gzip.compress(data, mtime=0)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, 0o644)
            paths.append(p)
        return "%s:%s" % (self.dtype, ",".join(paths))

    def name(self, rng):
        return self._names(rng)

    def may_be_ent(self, rel):
        return self._ent(rel)


def _rel(qname, zone):
    """Relative part of an absolute query name below `zone` (lowercase,
    without trailing dot) or None when not below it."""
    q = qname.lower().rstrip(".")
    z = zone.lower().rstrip(".")
    if q == z:
        return ""
    if q.endswith("." + z):
        return q[: -len(z) - 1]
    return None


def make_queries(rng, ds, zone, n, qtypes=QTYPES, weights=QTYPE_WEIGHTS, extra_names=()):
    """n random (qname, qtype) for dataset `ds` served as `zone`."""
    out = []
    zone = zone.rstrip(".")
    for _ in range(n):
        rel = ds.name(rng)
        qname = (rel + "." + zone) if rel else zone
        if rng.random() < 0.03:
            qname = qname.upper()
        out.append((qname + ".", rng.choices(qtypes, weights)[0]))
    for nm in extra_names:
        for t in qtypes:
            out.append((nm, t))
    return out


def ent_checker(zone_datasets):
    """zone_datasets: list of (zone, Dataset). Returns may_be_ent(qname)."""
    def check(qname):
        for zone, ds in zone_datasets:
            rel = _rel(qname, zone)
            if rel is not None and rel != "" and ds.may_be_ent(rel):
                return True
        return False
    return check


# --- values (A + TXT) shared by all non-generic types ----------------------

_WORDS = ["listed", "spam", "see", "http://bl.example/q?", "open", "relay", "proxy",
          "dyn", "pool", "abuse", "x:y", "100%", "a=b", "#notacomment"]


def _text(rng, allow_dollar=True, base=False):
    parts = []
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if allow_dollar and r < 0.2:
            parts.append("$")
        elif allow_dollar and r < 0.27:
            parts.append(rng.choice(["$1", "$2", "$$", "$5", "$=", "$x", "$$$"]))
        elif base and r < 0.35:
            parts.append("$=")
        else:
            parts.append(rng.choice(_WORDS))
    t = " ".join(parts)
    if rng.random() < 0.05:
        t = "=" + t
    return t


def _value(rng, bare_text=True):
    """A random value part of a data line (may be '')."""
    r = rng.random()
    a = rng.choice(["2", "3", "4", "10", "127.0.0.5", "127.0.1.2", "10.1", "192.0.2.9"])
    if r < 0.50:
        return ""
    if r < 0.58:
        return ":" + a
    if r < 0.64:
        return ":" + a + ":"
    if r < 0.80:
        return ":%s:%s" % (a, _text(rng))
    if r < 0.83:
        return ":%s : %s" % (a, _text(rng))
    if bare_text and r < 0.97:
        return _text(rng)
    return rng.choice(["# a comment", "; another comment", "\t# tab comment"])


def _default_line(rng):
    return rng.choice([":3:Listed: $", ":127.0.0.4", ":5:", ":2:See http://bl.example/$ ($1)",
                       ":127.0.0.6:text with : colon", ":10.1:ten"])


def _header(rng, serial=None, ns=True, soa=True, ttl=True, nsnames=None):
    lines = ["# generated test data", ""]
    if ttl and rng.random() < 0.7:
        lines.append("$TTL %s" % rng.choice(["1800", "1h", "2h", "900", "45m"]))
    if soa:
        lines.append("$SOA %s ns1.example.net. hostmaster.example.net. %s 2h 30m 1w %s" % (
            rng.choice(["0", "3600", "1d"]),
            serial if serial is not None else rng.choice([0, 2024010101, 7]),
            rng.choice(["10m", "300", "1h"])))
    if ns:
        names = nsnames or ["ns1.example.net", "ns2.example.net."]
        lines.append("$NS %s %s" % (rng.choice(["3600", "1d", "0"]), " ".join(names)))
    lines.append("$1 http://bl.example/lookup")
    if rng.random() < 0.5:
        lines.append("#$2 second var")
    return lines


# --- IPv4 --------------------------------------------------------------------

class _Ip4Universe:
    """A small IPv4 universe so that entries overlap and queries hit."""

    def __init__(self, rng):
        firsts = rng.sample([10, 11, 45, 127, 172, 192, 198, 203], 4)
        self.blocks = []
        for f in firsts:
            for s in rng.sample(range(256), 2):
                for t in rng.sample(range(256), 4):
                    self.blocks.append((f << 24) | (s << 16) | (t << 8))
        self.firsts = firsts

    def addr(self, rng):
        return rng.choice(self.blocks) | rng.randrange(256)


def _ip4_name_gen(ranges, uni, extra_edge=()):
    """Query-name generator for IPv4 datasets; ranges = [(lo, hi)]."""
    edge = ["0.0.0.0", "255.255.255.255", "2.0.0.127", "1.0.0.127", "", "www",
            "1.2.3", "1.2", "4.3.2.1.0", "a.b.c.d", "256.1.1.10", "01.0.0.127",
            "002.000.000.127", "1.2.3.-4", "1.2.3.4x", "-"] + list(extra_edge)

    def names(rng):
        r = rng.random()
        if r < 0.50 and ranges:
            lo, hi = rng.choice(ranges)
            rr = rng.random()
            if rr < 0.25:
                n = lo
            elif rr < 0.45:
                n = hi
            else:
                n = rng.randint(lo, hi)
            return ip4_rev(n)
        if r < 0.65 and ranges:
            lo, hi = rng.choice(ranges)
            n = lo - 1 if rng.random() < 0.5 else hi + 1
            return ip4_rev(n & 0xFFFFFFFF)
        if r < 0.85:
            return ip4_rev(uni.addr(rng))
        if r < 0.90:
            return ip4_rev(rng.getrandbits(32))
        if r < 0.95:
            # partial names below listed data: empty non-terminals for mailrep
            n = uni.addr(rng)
            k = rng.randint(1, 3)
            return ".".join(ip4_rev(n).split(".")[4 - k:])
        return rng.choice(edge)

    return names


def ip4_partial_ent(rel):
    """IPv4 zones: names with 1..3 numeric labels may be empty non-terminals."""
    labels = rel.split(".")
    return 1 <= len(labels) <= 3 and all(l.isdigit() and len(l) <= 3 and int(l) <= 255 for l in labels)


def _cidr_forms(rng, lo, bits):
    """Textual forms of a CIDR whose network address is lo."""
    a = ip4_str(lo)
    octs = a.split(".")
    forms = ["%s/%d" % (a, bits)]
    # shortened prefixes allowed when the dropped octets are zero
    for k in (3, 2, 1):
        if all(o == "0" for o in octs[k:]):
            forms.append("%s/%d" % (".".join(octs[:k]), bits))
    return rng.choice(forms)


def _ip4_entry(rng, uni, allow_ranges=True, allow_big=True, exclusion=False):
    """Returns (text, lo, hi) for a random ip4set/ip4trie entry."""
    base = uni.addr(rng)
    r = rng.random()
    if not allow_ranges:
        r = rng.choice([0.1, 0.4, 0.5, 0.9])
    if r < 0.35:
        t = ip4_str(base)
        if rng.random() < 0.05:
            t = ".".join("%03d" % int(o) for o in t.split("."))
        return t, base, base
    if r < 0.45:  # /24 prefix "a.b.c"
        lo = base & 0xFFFFFF00
        return ".".join(ip4_str(lo).split(".")[:3]), lo, lo | 255
    if r < 0.48 and allow_big:  # /16 prefix "a.b"
        lo = base & 0xFFFF0000
        return ".".join(ip4_str(lo).split(".")[:2]), lo, lo | 0xFFFF
    if r < 0.70:  # CIDR
        bits = rng.choice([16, 20, 22, 23, 24, 25, 26, 28, 29, 30, 31, 32] if allow_big
                          else [23, 24, 25, 26, 27, 28, 29, 30, 31, 32])
        mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        lo = base & mask
        return _cidr_forms(rng, lo, bits), lo, lo | (~mask & 0xFFFFFFFF)
    if r < 0.72 and allow_big and not exclusion:  # a whole /8
        lo = base & 0xFF000000
        return rng.choice(["%d/8" % (lo >> 24), "%d.0.0.0/8" % (lo >> 24)]), lo, lo | 0xFFFFFF
    # ranges
    rr = rng.random()
    if rr < 0.3:  # a.b.c.d-e (last octet)
        lo = base
        hi = (base & 0xFFFFFF00) | rng.randint(base & 255, 255)
        return "%s-%d" % (ip4_str(lo), hi & 255), lo, hi
    if rr < 0.5:  # a.b.c-e (prefix range on third octet)
        lo = base & 0xFFFFFF00
        t3 = (lo >> 8) & 255
        e = rng.randint(t3, min(255, t3 + 3))
        hi = (lo & 0xFFFF0000) | (e << 8) | 255
        return "%s-%d" % (".".join(ip4_str(lo).split(".")[:3]), e), lo, hi
    if rr < 0.6:  # a.b.c-a.b.d (prefix range, same length)
        lo = base & 0xFFFFFF00
        hi = min(lo + rng.randint(0, 2) * 256 + 255, 0xFFFFFFFF)
        return "%s-%s" % (".".join(ip4_str(lo).split(".")[:3]), ".".join(ip4_str(hi).split(".")[:3])), lo, hi
    # full range, possibly crossing /24 boundaries
    lo = base
    hi = min(base + rng.randint(0, 700), 0xFFFFFFFF)
    return "%s-%s" % (ip4_str(lo), ip4_str(hi)), lo, hi


_IP4_INVALID = ["1.2.3.4/33", "300.1.1.1", "1.2.3.4x", "10", "1.2.3.4/", "1.2.3.4-",
                "1.2.3.4-1.2.3", "1.2.3.9-1.2.3.4", "1.2.3.", ".1.2.3", "1.2.3.4/0",
                "127.0.0.1/8", "10.1.2.3/24", "1.2.3.4 :0", "1.2.3.5 :300", "1.2.3.6 :x",
                "1.2.3.7 :2 # comment after value", "!", "1..2.3", "1.2.3.4.5"]


def gen_ip4set(rng, n=400, files=2, gz_last=True, base_template=False, maxrange=False,
               crlf=False):
    """Random ip4set data (several files, the last one gzipped)."""
    uni = _Ip4Universe(rng)
    ranges = []
    outfiles = []
    for fi in range(files):
        lines = _header(rng) if fi == 0 else ["# file %d" % fi]
        if fi == 0 and base_template:
            lines.append("$= base [$=] for $ $1")
        if fi == 0 and maxrange:
            lines.append("$MAXRANGE4 /20")
            lines.append("$MAXRANGE4 /16")  # attempt to increase: ignored
        if rng.random() < 0.7:
            lines.append(_default_line(rng))
        for _ in range(n // files):
            r = rng.random()
            if r < 0.03:
                lines.append(_default_line(rng))
                continue
            if r < 0.06:
                lines.append(rng.choice(_IP4_INVALID))
                continue
            if r < 0.08:
                lines.append(rng.choice(["", "# comment", "; comment", "   ", "\t# indented"]))
                continue
            excl = r < 0.20
            text, lo, hi = _ip4_entry(rng, uni, exclusion=excl)
            if excl:
                lines.append(rng.choice(["!", "! ", "!\t"]) + text +
                             rng.choice(["", "", " :3:ignored value", " # why"]))
            else:
                v = _value(rng)
                sep = rng.choice([" ", "\t", "  "])
                lines.append(("  " if rng.random() < 0.05 else "") + text + (sep + v if v else "") +
                             (" " if rng.random() < 0.05 else ""))
            ranges.append((lo, hi))
        # a few special probes
        lines.append("127.0.0.2 :2:RFC 5782 test entry $")
        ranges.append((ip4_int("127.0.0.2"), ip4_int("127.0.0.2")))
        if crlf and fi == 0:
            a = uni.addr(rng)
            lines.append("%s text with cr\r" % ip4_str(a))
            lines.append("%s\r" % ip4_str(a + 1))
            ranges.append((a, a + 1))
        text = "\n".join(lines) + "\n"
        if fi == files - 1 and not gz_last:
            text = text.rstrip("\n")  # last line without newline
        outfiles.append(("ip4set-%d.txt%s" % (fi, ".gz" if (gz_last and fi == files - 1) else ""),
                         text, gz_last and fi == files - 1))
    return Dataset("ip4set", outfiles, _ip4_name_gen(ranges, uni), ip4_partial_ent)


def gen_ip4tset(rng, n=600):
    uni = _Ip4Universe(rng)
    lines = _header(rng)
    lines.append(rng.choice([":3:tset $ listed", ":127.0.0.9:", ":4", "# no default"]))
    ranges = []
    for _ in range(n):
        r = rng.random()
        a = uni.addr(rng)
        if r < 0.03:
            lines.append(rng.choice(["# c", "", "; c", "1.2.3.4x", "300.2.3.4", "1.2.3"]))
            continue
        if r < 0.06:
            lines.append("%s # comment" % ip4_str(a))
        elif r < 0.08:
            lines.append("%s\tignored value" % ip4_str(a))
        else:
            lines.append(ip4_str(a))
        ranges.append((a, a))
    lines.append("127.0.0.2")
    return Dataset("ip4tset", [("ip4tset.txt", "\n".join(lines) + "\n", False)],
                   _ip4_name_gen(ranges, uni), ip4_partial_ent)


def gen_ip4trie(rng, n=400):
    uni = _Ip4Universe(rng)
    lines = _header(rng)
    lines.append(_default_line(rng))
    ranges = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            lines.append(_default_line(rng))
            continue
        if r < 0.06:
            lines.append(rng.choice(_IP4_INVALID + ["1.2.3.4-1.2.3.9", "1.2.3.4-9"]))
            continue
        excl = r < 0.20
        text, lo, hi = _ip4_entry(rng, uni, allow_ranges=False, exclusion=excl)
        if excl:
            lines.append("!" + text)
        else:
            v = _value(rng)
            lines.append(text + (" " + v if v else ""))
        ranges.append((lo, hi))
    lines.append("127.0.0.2 :2:trie test $")
    return Dataset("ip4trie", [("ip4trie.txt.gz", "\n".join(lines) + "\n", True)],
                   _ip4_name_gen(ranges, uni), ip4_partial_ent)


# --- IPv6 --------------------------------------------------------------------

class _Ip6Universe:
    def __init__(self, rng):
        self.bases = []
        for _ in range(6):
            p = (0x2001 << 112) | (0x0db8 << 96) | (rng.randrange(1 << 16) << 80)
            for _ in range(3):
                self.bases.append(p | (rng.randrange(4) << 64))

    def addr(self, rng):
        b = rng.choice(self.bases)
        r = rng.random()
        if r < 0.4:
            return b | rng.randrange(16)
        if r < 0.7:
            return b | (rng.randrange(4) << 48) | rng.randrange(1 << 16)
        return b | rng.getrandbits(64)


def _ip6_text(rng, n, bits=128):
    """Textual forms: compressed, full, or trailing-zero-group-omitted."""
    full = ["%x" % ((n >> (112 - 16 * i)) & 0xFFFF) for i in range(8)]
    r = rng.random()
    if r < 0.5:
        t = str(ipaddress.IPv6Address(n))
    elif r < 0.7:
        t = ":".join(full)
    else:
        # trailing zero groups may be omitted when enough groups remain for bits
        keep = 8
        while keep > 1 and full[keep - 1] == "0" and (keep - 1) * 16 >= bits:
            keep -= 1
        t = ":".join(full[:keep])
        if keep == 8 or rng.random() < 0.5:
            t = str(ipaddress.IPv6Address(n))
    return t


def _ip6_name_gen(ranges, uni):
    edge = ["", "www", "1.0.0.0", "g." * 31 + "g", ".".join("0" * 32),
            ".".join("f" * 32), ip6_rev(0xFFFF7F000002), ip6_rev(0xFFFF7F000001),
            ".".join("1" * 33), ".".join("1" * 31)]

    def names(rng):
        r = rng.random()
        if r < 0.5 and ranges:
            lo, hi = rng.choice(ranges)
            rr = rng.random()
            n = lo if rr < 0.2 else hi if rr < 0.35 else rng.randint(lo, hi)
            return ip6_rev(n)
        if r < 0.65 and ranges:
            lo, hi = rng.choice(ranges)
            return ip6_rev((lo - 1 if rng.random() < 0.5 else hi + 1) & ((1 << 128) - 1))
        if r < 0.88:
            return ip6_rev(uni.addr(rng))
        if r < 0.92:
            return ip6_rev(rng.getrandbits(128))
        if r < 0.96:
            k = rng.randint(1, 31)
            return ".".join(ip6_rev(uni.addr(rng)).split(".")[32 - k:])
        return rng.choice(edge)

    return names


def ip6_partial_ent(rel):
    labels = rel.split(".")
    return 1 <= len(labels) <= 31 and all(len(l) == 1 and l in "0123456789abcdef" for l in labels)


def gen_ip6trie(rng, n=300):
    uni = _Ip6Universe(rng)
    lines = _header(rng)
    lines.append(_default_line(rng))
    ranges = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            lines.append(_default_line(rng))
            continue
        if r < 0.05:
            lines.append(rng.choice(["2001:db8::/129", "2001:db8::g", "2001:db8:::1", "::1/64",
                                     "2001:db8::1-2001:db8::5", "1.2.3.4"]))
            continue
        excl = r < 0.18
        a = uni.addr(rng)
        bits = rng.choice([128, 128, 128, 127, 124, 120, 112, 96, 80, 64, 64, 63, 56, 48]
                          if not excl else [128, 128, 126, 120, 64])
        mask = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
        lo = a & mask
        hi = lo | ((1 << (128 - bits)) - 1)
        t = _ip6_text(rng, lo, bits)
        if bits != 128 or rng.random() < 0.2:
            t += "/%d" % bits
        if excl:
            lines.append("!" + t)
        else:
            v = _value(rng)
            lines.append(t + (" " + v if v else ""))
        ranges.append((lo, hi))
    lines.append("::ffff:7f00:2 :2:RFC 5782 v6 test $")
    ranges.append((0xFFFF7F000002, 0xFFFF7F000002))
    return Dataset("ip6trie", [("ip6trie.txt", "\n".join(lines) + "\n", False)],
                   _ip6_name_gen(ranges, uni), ip6_partial_ent)


def gen_ip6tset(rng, n=300):
    uni = _Ip6Universe(rng)
    lines = _header(rng)
    lines.append(rng.choice([":3:v6 tset $", ":127.0.0.7", "# none"]))
    ranges = []
    for _ in range(n):
        r = rng.random()
        a = uni.addr(rng)
        lo = a & ~((1 << 64) - 1)
        if r < 0.03:
            lines.append(rng.choice(["# c", "", "2001:db8:zz:1", "2001:db8::/48"]))
            continue
        if r < 0.18:
            lines.append("!" + _ip6_text(rng, a))
            ranges.append((a, a))
            continue
        words = ["%x" % ((lo >> (112 - 16 * i)) & 0xFFFF) for i in range(4)]
        if rng.random() < 0.1:
            words = ["%04x" % int(w, 16) for w in words]
        lines.append(":".join(words))
        ranges.append((lo, lo | ((1 << 64) - 1)))
    return Dataset("ip6tset", [("ip6tset.txt", "\n".join(lines) + "\n", False)],
                   _ip6_name_gen(ranges, uni), ip6_partial_ent)


# --- names -------------------------------------------------------------------

_LABELS = ["a", "b", "c", "mail", "spam", "x1", "example", "com", "net", "org", "co", "uk",
           "xn--bcher-kva", "under_score", "dash-ed", "1", "123"]


def _dname(rng, depth=None):
    depth = depth or rng.randint(1, 4)
    return ".".join(rng.choice(_LABELS) for _ in range(depth))


def _ancestors(name):
    labels = name.split(".")
    return {".".join(labels[i:]) for i in range(1, len(labels))}


def gen_dnset(rng, n=400):
    lines = _header(rng)
    lines.append(_default_line(rng))
    entries = []   # names (without wildcard markers)
    wild = []
    ent = set()
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            lines.append(_default_line(rng))
            continue
        if r < 0.05:
            lines.append(rng.choice(["bad..name", "*", ".", "*.", "a.*.b", "#c", "", "!"]))
            continue
        nm = _dname(rng)
        if rng.random() < 0.04:
            nm = nm.upper()
        form = rng.random()
        if form < 0.55:
            key = nm
        elif form < 0.75:
            key = "*." + nm
            wild.append(nm)
        elif form < 0.85:
            key = "." + nm
            wild.append(nm)
        else:
            key = "!" + rng.choice(["", "*.", "."]) + nm
        v = "" if key.startswith("!") else _value(rng)
        lines.append(key + (" " + v if v else "") + ("." if rng.random() < 0.03 and not v else ""))
        entries.append(nm.lower())
        ent |= _ancestors(nm.lower())
        if key.startswith("*.") or key.startswith("!*.") or key.startswith("."):
            ent.add(nm.lower())

    def names(rng):
        r = rng.random()
        if r < 0.35 and entries:
            return rng.choice(entries)
        if r < 0.55 and wild:
            return _dname(rng, rng.randint(1, 2)) + "." + rng.choice(wild)
        if r < 0.70 and entries:
            e = rng.choice(entries)
            return e.split(".", 1)[1] if "." in e else e
        if r < 0.95:
            return _dname(rng)
        return rng.choice(["", "*", "a" * 63, ".".join(["a"] * 40), "A.B", "\\.x"])

    return Dataset("dnset", [("dnset.txt", "\n".join(lines) + "\n", False)], names,
                   lambda rel: rel.lower() in ent)


def gen_generic(rng, n=200, zone_ns=None):
    lines = _header(rng, nsnames=zone_ns)
    owners = ["@"]
    ent = set()
    for _ in range(n):
        r = rng.random()
        nm = rng.choice(["@", _dname(rng, rng.randint(1, 3))])
        if rng.random() < 0.05 and nm != "@":
            nm = nm.upper()
        ttl = rng.choice(["", "", "300 ", "1h ", "0 "])
        if r < 0.4:
            rec = "%s %sA %s" % (nm, ttl, rng.choice(["127.0.0.2", "127.0.0.3", "192.0.2.%d" % rng.randrange(256)]))
        elif r < 0.75:
            rec = "%s %sTXT %s" % (nm, ttl, rng.choice(['"quoted text here"', "unquoted text", '"with $ dollar"',
                                                        "v=spf1 -all", '"a;b"']))
        elif r < 0.93:
            rec = "%s %sMX %d %s" % (nm, ttl, rng.choice([0, 10, 20]), rng.choice(["mx.example.net", "mx2.example.net."]))
        else:
            rec = rng.choice(["bad 300 AAAA ::1", "x CNAME y", "y A 300.1.1.1", "z MX mx.example.net",
                              "# comment", ""])
        lines.append(rec)
        if nm != "@":
            owners.append(nm.lower())
            ent |= _ancestors(nm.lower())
    if zone_ns:
        lines.append("ns1 A 192.0.2.53")
        lines.append("ns2 A 192.0.2.54")
        owners += ["ns1", "ns2"]

    def names(rng):
        r = rng.random()
        if r < 0.6:
            o = rng.choice(owners)
            return "" if o == "@" else o
        if r < 0.75:
            o = rng.choice(owners)
            return o.split(".", 1)[1] if "." in o else o
        return _dname(rng)

    return Dataset("generic", [("generic.txt", "\n".join(lines) + "\n", False)], names,
                   lambda rel: rel.lower() in ent)


def gen_combined(rng):
    """combined dataset: ip4set (proxies and @), dnset (dom), generic (@ and
    proxies), ip4trie (trie), ip6trie (v6.sub)."""
    sub = {
        "ip4set": gen_ip4set(rng, n=150, files=1, gz_last=False),
        "dnset": gen_dnset(rng, n=120),
        "generic": gen_generic(rng, n=60),
        "ip4trie": gen_ip4trie(rng, n=120),
        "ip6trie": gen_ip6trie(rng, n=80),
    }
    specs = [("ip4set:proxy", ["proxies", "@"], sub["ip4set"]),
             ("dnset", ["dom"], sub["dnset"]),
             ("generic:common", ["@", "proxies"], sub["generic"]),
             ("ip4trie:t", ["trie"], sub["ip4trie"]),
             ("ip6trie", ["v6.sub"], sub["ip6trie"])]
    lines = ["# common section", "$TTL 2h", "$NS 1d ns1.example.net ns2.example.net",
             "$SOA 1w ns1.example.net admin.example.net 0 2h 2h 1w 1h", "$1 common var"]
    for head, subzones, ds in specs:
        lines.append("$DATASET %s %s" % (head, " ".join(subzones)))
        body = ds.files[0][1].split("\n")
        # nested datasets keep their $TTL/$n, their $SOA/$NS go to the base zone
        # only via the common section, so strip them to keep things readable
        body = [l for l in body if not l.startswith(("$SOA", "$NS"))]
        lines.extend(body)
    ent = {"sub"}

    def names(rng):
        r = rng.random()
        if r < 0.3:
            s = sub["ip4set"].name(rng)
            return rng.choice(["proxies.", ""]) + s if s else rng.choice(["proxies", ""])
        if r < 0.45:
            s = sub["dnset"].name(rng)
            return (s + ".dom") if s else "dom"
        if r < 0.55:
            s = sub["generic"].name(rng)
            parts = [x for x in (s, rng.choice(["", "proxies"])) if x]
            return ".".join(parts)
        if r < 0.75:
            s = sub["ip4trie"].name(rng)
            return (s + ".trie") if s else "trie"
        if r < 0.92:
            s = sub["ip6trie"].name(rng)
            return (s + ".v6.sub") if s else "v6.sub"
        return rng.choice(["", "sub", "nosuch", "x.nosuch", "proxies", "www"])

    def may_be_ent(rel):
        rel = rel.lower()
        if rel in ent:
            return True
        for suffix, key in (("proxies", "ip4set"), ("", "ip4set"), ("dom", "dnset"), ("trie", "ip4trie"),
                            ("v6.sub", "ip6trie")):
            if suffix == "":
                inner = rel
            elif rel.endswith("." + suffix):
                inner = rel[: -len(suffix) - 1]
            else:
                continue
            if sub[key].may_be_ent(inner):
                return True
        if sub["generic"].may_be_ent(rel) or (rel.endswith(".proxies") and sub["generic"].may_be_ent(rel[:-8])):
            return True
        return False

    return Dataset("combined", [("combined.txt", "\n".join(lines) + "\n", False)], names, may_be_ent)


def gen_acl(rng, action):
    """An acl dataset matching 127.0.0.1 (the test client) with `action`."""
    lines = ["# acl", "10.0.0.0/8 :refuse", "2001:db8::/32 :ignore",
             "127.0.0.0/8 %s" % action, "192.0.2.1"]
    return Dataset("acl", [("acl-%d.txt" % rng.randrange(1 << 30), "\n".join(lines) + "\n", False)],
                   lambda rng: "", lambda rel: False)
