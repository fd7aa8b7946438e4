#!/usr/bin/python3
"""Benchmark: `mailrep check ip` against 40 DNSBLs takes one round trip, not forty.

knotd serves 40 DNSBL zones (and the reverse zone) on loopback. In front of it
runs a small UDP forwarder, written here, that holds every answer back for a
fixed delay (default 200 ms) before passing it on, as a distant resolver
would. `mailrep check ip --resolver FORWARDER` is then timed. The forwarder
delays answers concurrently, so checks that send all their queries at once
finish in about one delay; checks that wait for each list in turn would take
forty. Serial baseline: one check against a single list (one round trip),
which is also printed.

The address checked has no PTR record, so there is no second round trip for
the forward confirmation of a PTR name (that lookup depends on the PTR
answer and cannot be sent earlier).

Prints the delay, the median total over the runs, and the ratio
total/delay, which must stay under 1.5. Only 127.0.0.1 is used.
Run with /usr/bin/python3:  bench/check_bench.py [--delay-ms 200] [--runs 5]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import heapq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
from conftest import free_port  # noqa: E402
from knot import soa, start_knot  # noqa: E402

NLISTS = 40


class DelayForwarder:
    """UDP forwarder: queries go to upstream at once; each answer is sent
    back to the client `delay` seconds after it arrived from upstream."""

    def __init__(self, upstream_port, delay):
        self.delay = delay
        self.up = ("127.0.0.1", upstream_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.upsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upsock.bind(("127.0.0.1", 0))
        self.clients = {}  # (id, question bytes) -> client address
        self.heap = []
        self.lock = threading.Condition()
        self.stop = False
        for fn in (self.from_clients, self.from_upstream, self.sender):
            threading.Thread(target=fn, daemon=True).start()

    @staticmethod
    def key(msg):
        """The id and the question (name, type, class), lowercased: the same
        in a query and in its answer (queries carry no compression)."""
        end = msg.find(b"\0", 12)
        return msg[:2], msg[12:end + 5].lower()

    def from_clients(self):
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            if len(data) < 12:
                continue
            self.clients[self.key(data)] = addr
            self.upsock.sendto(data, self.up)

    def from_upstream(self):
        while not self.stop:
            try:
                data, _ = self.upsock.recvfrom(65535)
            except OSError:
                return
            addr = self.clients.pop(self.key(data), None)
            if addr is None:
                continue
            with self.lock:
                heapq.heappush(self.heap, (time.monotonic() + self.delay, id(data), data, addr))
                self.lock.notify()

    def sender(self):
        while not self.stop:
            with self.lock:
                while not self.heap and not self.stop:
                    self.lock.wait(0.1)
                if self.stop:
                    return
                due, _, data, addr = self.heap[0]
                now = time.monotonic()
                if due > now:
                    self.lock.wait(due - now)
                    continue
                heapq.heappop(self.heap)
            self.sock.sendto(data, addr)

    def close(self):
        self.stop = True
        with self.lock:
            self.lock.notify()
        self.sock.close()
        self.upsock.close()


def zones():
    z = {}
    for i in range(NLISTS):
        origin = "bl%02d.bench.test" % i
        text = soa(origin) + "2.0.0.127 A 127.0.0.2\n"
        if i % 10 == 0:  # a few lists list the address, with a reason
            text += "10.2.0.192 A 127.0.0.2\n10.2.0.192 TXT \"listed by bench\"\n"
        z[origin] = text
    z["2.0.192.in-addr.arpa"] = soa("2.0.192.in-addr.arpa")
    return z


def run_check(binary, resolver, lists):
    t0 = time.monotonic()
    p = subprocess.run([binary, "check", "ip", "--resolver", resolver, "--lists", lists,
                        "--json", "192.0.2.10"], capture_output=True, timeout=60)
    dt = time.monotonic() - t0
    if p.returncode not in (0, 1):
        raise SystemExit("check failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    return dt, p.stdout.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mailrep"))
    a = ap.parse_args()
    delay = a.delay_ms / 1000.0
    tmp = tempfile.mkdtemp(prefix="mailrep-check-bench-")
    os.chmod(tmp, 0o755)
    srv = fwd = None
    try:
        srv = start_knot(tmp, zones())
        fwd = DelayForwarder(srv.port, delay)
        resolver = "127.0.0.1:%d" % fwd.port
        lists = os.path.join(tmp, "lists.txt")
        with open(lists, "w") as f:
            for i in range(NLISTS):
                f.write("bl%02d.bench.test | ip4 | Bench %02d | - | https://bench.test/\n" % (i, i))
        one = os.path.join(tmp, "one.txt")
        with open(one, "w") as f:
            f.write("bl01.bench.test | ip4 | Bench 01 | - | https://bench.test/\n")
        _, out = run_check(a.binary, resolver, lists)  # warm-up, and a sanity check
        assert out.count('"status":"listed"') == NLISTS // 10, out
        totals = [run_check(a.binary, resolver, lists)[0] for _ in range(a.runs)]
        singles = [run_check(a.binary, resolver, one)[0] for _ in range(a.runs)]
        total, single = statistics.median(totals), statistics.median(singles)
        ratio = total / delay
        print("check ip: %d lists (%d queries + PTR), added delay %.0f ms per answer"
              % (NLISTS, 4 * NLISTS, a.delay_ms))
        print("  1 list:   median %.0f ms over %d runs" % (single * 1000, a.runs))
        print("  %d lists: median %.0f ms over %d runs (runs: %s)"
              % (NLISTS, total * 1000, a.runs, ", ".join("%.0f" % (t * 1000) for t in totals)))
        print("  ratio total/delay = %.2f (target < 1.5; serial would be ~%d)"
              % (ratio, NLISTS))
        print("PASS" if ratio < 1.5 else "FAIL")
        return 0 if ratio < 1.5 else 1
    finally:
        if fwd:
            fwd.close()
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
