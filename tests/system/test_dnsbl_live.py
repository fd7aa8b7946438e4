"""Live zones: `mailrep dnsbl` serving the listing store directly.

The store is written by the CLI (`mailrep impact add`, `mailrep delist`), the
way a trap receiver writes it, while `mailrep dnsbl ZONE:store:DB` serves it.
A new listing must be answered, and an expired or delisted one dropped, within
a second, without a reload. Time is injected through MAILREP_NOW=file:PATH,
which both the CLI and the running server read, so expiry needs no waiting.
A real knotd secondary follows the live zone by NOTIFY and IXFR.
"""
import datetime
import os
import shutil
import subprocess
import time

import dns.rcode
import pytest

from conftest import MAILREP, free_port, start_mailrep_dnsbl
from knotd import Knot
from test_dnsbl_reload_axfr import a_of, ask, txt_of, wait_for

ZONE = "bl.test"
T0 = datetime.datetime(2026, 3, 2, 12, 0, 0)


def rev(ip, zone=ZONE):
    if ":" in ip:  # IPv6: the RFC 5782 nibble form
        import ipaddress
        nibbles = ipaddress.IPv6Address(ip).exploded.replace(":", "")
        return ".".join(reversed(nibbles)) + "." + zone + "."
    return ".".join(reversed(ip.split("."))) + "." + zone + "."


class World:
    def __init__(self, d):
        self.dir = d
        os.chmod(d, 0o777)  # the server drops privileges and writes the store too
        self.db = os.path.join(d, "bl.db")
        self.clock = os.path.join(d, "clock")
        self.set_time(T0)
        self.env = dict(os.environ, MAILREP_NOW="file:" + self.clock)

    def set_time(self, t):
        tmp = self.clock + ".tmp"
        with open(tmp, "w") as f:
            f.write(t.strftime("%Y-%m-%dT%H:%M:%SZ\n"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.clock)

    def cli(self, *args):
        r = subprocess.run([MAILREP] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, "mailrep %s: %s%s" % (" ".join(args), r.stdout, r.stderr)
        for p in os.listdir(self.dir):
            if p.startswith("bl.db"):
                os.chmod(os.path.join(self.dir, p), 0o666)
        return r.stdout

    def impact(self, ip):
        return self.cli("impact", "add", "--db", self.db, ip)

    def serve(self, servers, zones, extra=()):
        os.environ["MAILREP_NOW"] = "file:" + self.clock
        try:
            srv = start_mailrep_dnsbl(list(extra) + ["--lookup-url", "https://bl.test/lookup?ip="] +
                                      [z % {"db": self.db} for z in zones], self.dir)
        finally:
            del os.environ["MAILREP_NOW"]
        servers.append(srv)
        return srv


@pytest.fixture
def world(datadir):
    return World(datadir)


def answers(port, name):
    """The A records, or None while the server does not answer."""
    r = ask(port, name, timeout=0.5)
    return None if r is None else a_of(r)


def timed_wait(pred, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit + 2:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def test_new_listing_answered_within_one_second(world, servers):
    world.impact("11.2.3.4")  # the store exists before the server opens it
    srv = world.serve(servers, ["%s:store:%%(db)s" % ZONE])
    assert a_of(ask(srv.port, rev("11.2.3.4"))) == ["127.0.0.2"]
    txt = txt_of(ask(srv.port, rev("11.2.3.4"), "TXT"))
    assert txt == ['"Listed at Level 1, see https://bl.test/lookup?ip=11.2.3.4"'], txt
    # RFC 5782: 127.0.0.2 listed, 127.0.0.1 not
    assert "127.0.0.2" in a_of(ask(srv.port, rev("127.0.0.2")))
    assert ask(srv.port, rev("127.0.0.1")).rcode() == dns.rcode.NXDOMAIN
    assert ask(srv.port, rev("11.9.9.9")).rcode() == dns.rcode.NXDOMAIN

    delays = []
    for ip in ("11.9.9.9", "11.20.30.40", "11.20.30.41"):
        world.impact(ip)
        d = timed_wait(lambda: answers(srv.port, rev(ip)) == ["127.0.0.2"], 1.0)
        assert d is not None, "%s never answered:\n%s" % (ip, srv.output()[-2000:])
        delays.append(d)
    assert max(delays) <= 1.0, "impact -> DNS answer must take at most 1 s: %s" % delays
    # IPv6 listings (Level 1) and the IPv6 RFC 5782 test entry
    world.impact("2a00:1450::7")
    d = timed_wait(lambda: answers(srv.port, rev("2a00:1450::7")) == ["127.0.0.2"], 1.0)
    assert d is not None and d <= 1.0, "IPv6 listing not answered:\n" + srv.output()[-2000:]
    txt = txt_of(ask(srv.port, rev("2a00:1450::7"), "TXT"))
    assert txt == ['"Listed at Level 1, see https://bl.test/lookup?ip=2a00:1450::7"'], txt
    assert "127.0.0.2" in a_of(ask(srv.port, rev("::ffff:7f00:2")))
    assert ask(srv.port, rev("::ffff:7f00:1")).rcode() == dns.rcode.NXDOMAIN


def test_expiry_and_delisting_take_effect_without_writes(world, servers):
    world.impact("11.2.3.4")
    world.set_time(T0 + datetime.timedelta(days=3))
    world.impact("11.5.6.7")
    srv = world.serve(servers, ["%s:store1:%%(db)s" % ZONE])
    assert a_of(ask(srv.port, rev("11.2.3.4"))) == ["127.0.0.2"]
    assert a_of(ask(srv.port, rev("11.5.6.7"))) == ["127.0.0.2"]
    # 7 days after its last impact 11.2.3.4 expires; nothing is written, only the clock moves
    world.set_time(T0 + datetime.timedelta(days=7, seconds=1))
    d = timed_wait(lambda: ask(srv.port, rev("11.2.3.4")).rcode() == dns.rcode.NXDOMAIN, 1.0)
    assert d is not None and d <= 1.0, "expired listing still answered:\n" + srv.output()[-2000:]
    assert a_of(ask(srv.port, rev("11.5.6.7"))) == ["127.0.0.2"], "the younger listing stays"
    # an operator delisting is answered within a second too
    world.cli("delist", "--db", world.db, "11.5.6.7")
    d = timed_wait(lambda: ask(srv.port, rev("11.5.6.7")).rcode() == dns.rcode.NXDOMAIN, 1.0)
    assert d is not None and d <= 1.0, "delisted IP still answered"


def test_levels_have_their_own_codes_and_zones(world, servers):
    # four impacts from four IPs of one /24 list the allocation (Level 2, threshold 4 for a /24)
    for i in (10, 11, 12, 13):
        world.impact("11.7.8.%d" % i)
    srv = world.serve(servers, ["%s:store:%%(db)s" % ZONE, "l1.%s:store1:%%(db)s" % ZONE,
                                "l2.%s:store2:%%(db)s" % ZONE, "l3.%s:store3:%%(db)s" % ZONE])
    # combined: a listed IP inside the listed allocation has both codes; its neighbour only Level 2
    assert a_of(ask(srv.port, rev("11.7.8.10"))) == ["127.0.0.2", "127.0.0.3"]
    assert a_of(ask(srv.port, rev("11.7.8.200"))) == ["127.0.0.3"]
    assert a_of(ask(srv.port, rev("11.7.8.200", "l2." + ZONE))) == ["127.0.0.3"]
    assert ask(srv.port, rev("11.7.8.200", "l1." + ZONE)).rcode() == dns.rcode.NXDOMAIN
    assert a_of(ask(srv.port, rev("11.7.8.10", "l1." + ZONE))) == ["127.0.0.2"]
    assert ask(srv.port, rev("11.7.8.200", "l3." + ZONE)).rcode() == dns.rcode.NXDOMAIN
    for z in ("l1.", "l2.", "l3."):  # RFC 5782 test entry in every zone
        assert a_of(ask(srv.port, rev("127.0.0.2", z + ZONE))), z
    txt = txt_of(ask(srv.port, rev("11.7.8.200"), "TXT"))
    assert txt == ['"Listed at Level 2 (11.7.8.0/24), see https://bl.test/lookup?ip=11.7.8.200"'], txt


def test_knotd_secondary_follows_the_live_zone(world, servers):
    world.impact("11.2.3.4")
    kport = free_port()
    srv = world.serve(servers, ["%s:store:%%(db)s" % ZONE], ["--notify", "127.0.0.1/%d" % kport])
    k = Knot(world.dir, srv.port, kport, ZONE)
    try:
        try:
            wait_for(lambda: answers(kport, rev("11.2.3.4")) == ["127.0.0.2"], 30,
                     "knotd to transfer the live zone")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, k.log()))
        world.impact("11.66.77.88")
        try:
            wait_for(lambda: answers(kport, rev("11.66.77.88")) == ["127.0.0.2"], 10,
                     "the secondary to answer a new listing after NOTIFY")
        except AssertionError as e:
            raise AssertionError("%s\nknotd:\n%s\nmailrep:\n%s" % (e, k.log(), srv.output()[-3000:]))
        assert "IXFR" in k.log(), k.log()
    finally:
        k.stop()
