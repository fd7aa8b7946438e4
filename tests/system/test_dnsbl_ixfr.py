"""Serials, IXFR (RFC 1995) and NOTIFY (RFC 1996) for `mailrep dnsbl`.

Every reload that changes a zone advances its SOA serial, keeps the
difference, and NOTIFYs the configured secondaries. The secondary here is a
real knotd: it must follow each change by IXFR (its log says so) and then
answer the new listing. dnspython checks the IXFR wire format itself.
"""
import os
import shutil
import signal
import struct
import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from conftest import free_port, start_mailrep_dnsbl
from knotd import Knot
from test_dnsbl_reload_axfr import HEADER, ZONE, a_of, ask, rev, wait_for, write

def data(listed, serial=0):
    lines = [HEADER.replace(" 0 2h", " %d 2h" % serial), ":2:Listed $"]
    lines += sorted(listed)
    return "\n".join(lines) + "\n"


def soa_serial(port, host="127.0.0.1"):
    r = ask(port, ZONE + ".", "SOA", timeout=1.0)
    if r is None or r.rcode() != dns.rcode.NOERROR or not r.answer:
        return None
    return r.answer[0][0].serial


@pytest.fixture
def knot_box():
    made = []
    yield made
    for k in made:
        k.stop()


def test_serial_advances_on_every_change_even_within_one_second(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), data({"192.0.2.1"}))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    s0 = soa_serial(srv.port)
    assert s0
    # the journal (and with it the record-by-record comparison) starts with the first IXFR
    assert [r[1] for r in ixfr(srv.port, s0)] == ["SOA"]
    # same mtime second as far as the serial goes: the data serial does not move
    st = os.stat(path)
    with open(path, "w") as f:
        f.write(data({"192.0.2.1", "192.0.2.2"}))
    os.utime(path, (st.st_atime, st.st_mtime))  # the size changed, so the reload notices
    srv.signal(signal.SIGHUP)
    wait_for(lambda: a_of(ask(srv.port, rev("192.0.2.2"))) == ["127.0.0.2"], 5, "192.0.2.2 listed")
    s1 = soa_serial(srv.port)
    assert s1 == (s0 + 1) % 2**32, (s0, s1)
    # a reload with identical content keeps the serial
    write(path, data({"192.0.2.1", "192.0.2.2"}))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in srv.output() or "serial" in srv.output(), 5, "reload logged")
    assert soa_serial(srv.port) == s1


def ixfr(port, serial):
    """An IXFR over TCP; returns the answer records as (name, type, text) in order."""
    q = dns.message.make_query(ZONE + ".", "IXFR")
    soa = dns.rrset.from_text(ZONE + ".", 0, "IN", "SOA",
                              "ns1.example.net. hostmaster.example.net. %d 1 1 1 1" % serial)
    q.authority.append(soa)
    wire = q.to_wire()
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack("!H", len(wire)) + wire)
    out = []
    soas = 0
    while True:
        ln = s.recv(2, socket.MSG_WAITALL)
        if len(ln) < 2:
            break
        m = s.recv(struct.unpack("!H", ln)[0], socket.MSG_WAITALL)
        r = dns.message.from_wire(m, one_rr_per_rrset=True)
        for rrset in r.answer:
            for rd in rrset:
                out.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()))
        soas = sum(1 for o in out if o[1] == "SOA")
        if out and out[0][1] == "SOA" and len(out) > 1 and out[-1] == out[0] and soas >= 2:
            break
        if len(out) == 1 and out[0][1] == "SOA" and int(out[0][2].split()[2]) == serial:
            break
    s.close()
    return out


def test_ixfr_sends_only_the_changes(datadir, servers):
    base = {"192.0.2.%d" % i for i in range(1, 40)}
    path = write(os.path.join(datadir, "bl.txt"), data(base, serial=100))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    assert soa_serial(srv.port) == 100
    assert [r[1] for r in ixfr(srv.port, 100)] == ["SOA"]  # up to date; starts the journal
    write(path, data((base - {"192.0.2.5"}) | {"198.51.100.7"}, serial=101))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: soa_serial(srv.port) == 101, 5, "serial 101")
    write(path, data((base - {"192.0.2.5"}) | {"198.51.100.7", "198.51.100.8"}, serial=102))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: soa_serial(srv.port) == 102, 5, "serial 102")

    recs = ixfr(srv.port, 100)
    serials = [int(r[2].split()[2]) for r in recs if r[1] == "SOA"]
    # current, then (old, new) per version, then current again
    assert serials == [102, 100, 101, 101, 102, 102], serials
    names = [r[0] for r in recs if r[1] == "A"]
    assert names == ["5.2.0.192.%s." % ZONE, "7.100.51.198.%s." % ZONE, "8.100.51.198.%s." % ZONE], recs
    assert len(recs) < 20, "an IXFR must not resend the whole zone: %d records" % len(recs)
    # up to date: the SOA alone
    recs = ixfr(srv.port, 102)
    assert [r[1] for r in recs] == ["SOA"] and int(recs[0][2].split()[2]) == 102
    # older than the journal: the whole zone (AXFR form)
    recs = ixfr(srv.port, 7)
    assert sum(1 for r in recs if r[1] == "A") == 40 and recs[0] == recs[-1]
    # IXFR over UDP: the current SOA alone
    q = dns.message.make_query(ZONE + ".", "IXFR")
    r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=2)
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA] and r.answer[0][0].serial == 102


def test_without_journal_every_change_is_a_new_serial_and_ixfr_is_axfr(datadir, servers):
    path = write(os.path.join(datadir, "bl.txt"), data({"192.0.2.1"}, serial=100))
    srv = start_mailrep_dnsbl(["-c", "0", "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    write(path, data({"192.0.2.1", "192.0.2.2"}, serial=100))  # the data's serial did not move
    srv.signal(signal.SIGHUP)
    wait_for(lambda: soa_serial(srv.port) == 101, 5, "serial 101")
    recs = ixfr(srv.port, 100)  # nothing was journaled: the whole zone
    assert sum(1 for r in recs if r[1] == "A") == 2 and recs[0] == recs[-1], recs


def test_knotd_follows_changes_by_notify_and_ixfr(datadir, servers, knot_box):
    listed = {"198.51.100.%d" % i for i in range(1, 60)}
    path = write(os.path.join(datadir, "bl.txt"), data(listed))
    # the secondary's port is chosen first: mailrep is told where to send NOTIFY
    kport = free_port()
    srv = start_mailrep_dnsbl(["-c", "0", "--notify", "127.0.0.1/%d" % kport,
                               "%s:ip4set:%s" % (ZONE, path)], datadir)
    servers.append(srv)
    k = Knot(datadir, srv.port, kport, ZONE)
    knot_box.append(k)

    s0 = soa_serial(srv.port)
    try:
        wait_for(lambda: k.serial() == s0, 30, "knotd to transfer the zone")
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, k.log()))
    assert a_of(ask(kport, rev("198.51.100.7"))) == ["127.0.0.2"]
    assert ask(kport, rev("203.0.113.9")).rcode() == dns.rcode.NXDOMAIN

    for step, (add, remove) in enumerate([("203.0.113.9", "198.51.100.7"), ("203.0.113.10", "198.51.100.8")]):
        listed = (listed | {add}) - {remove}
        write(path, data(listed))
        srv.signal(signal.SIGHUP)
        wait_for(lambda: a_of(ask(srv.port, rev(add))) == ["127.0.0.2"], 5, "new listing served by mailrep")
        want = soa_serial(srv.port)
        try:
            # knotd's own refresh timer is 2h: only the NOTIFY brings it here this fast
            wait_for(lambda: k.serial() == want, 10, "knotd to follow serial %d after NOTIFY" % want)
        except AssertionError as e:
            raise AssertionError("%s\nknotd log:\n%s\nmailrep log:\n%s" % (e, k.log(), srv.output()))
        assert a_of(ask(kport, rev(add))) == ["127.0.0.2"], "secondary must answer the new listing"
        assert ask(kport, rev(remove)).rcode() == dns.rcode.NXDOMAIN, "secondary must drop the delisted IP"
    log = k.log()
    assert "IXFR" in log and "notify" in log.lower(), log
    assert "AXFR of" in srv.output() and "IXFR of" in srv.output(), srv.output()
    assert "answered" in srv.output()  # the NOTIFY was acknowledged
