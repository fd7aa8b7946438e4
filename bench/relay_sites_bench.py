#!/usr/bin/python3
"""relay_sites_bench.py — the relay's CPU per message when its mail goes to
many destination sites instead of one.

knotd serves one zone in which each of N domains dI.sites.test has its own
MX host mxI.sites.test (A 127.0.0.1), so the relay resolves N MX sets and
keeps N sites; smtp-sink on 127.0.0.1 takes every connection (the relay's
--smtp-port). A first round sends one message to each domain, so every MX
lookup is made and every site exists; then M messages go round robin over
the domains, from several persistent SMTP sessions, and the relay's CPU
time (all threads, from /proc) over that second round is divided by M.
The same run is made with N = 1 (every message to one site), and the ratio
of the two is printed: with per-site work kept O(1) it stays near 1.

No DKIM key and no TLS, so what is measured is reception, routing,
scheduling, the spool and delivery.

Usage: bench/relay_sites_bench.py [--bin build/mailrep] [--sites N] [-m M] [--perf FILE]
"""
import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
from knot import soa, start_knot  # noqa: E402
from postfix_instance import free_port  # noqa: E402
from relay_bench import LogCounter, cpu_seconds, wait_port  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SESSIONS = 8
BODY = ("From: a@example.com\r\nTo: b@sites.test\r\nSubject: sites\r\n\r\n" +
        "x" * 1000 + "\r\n")


def send(port, rcpts):
    """Sends one message to each recipient, over SESSIONS connections."""
    def worker(part):
        s = smtplib.SMTP("127.0.0.1", port, timeout=120)
        s.ehlo("bench.test")
        for r in part:
            s.sendmail("a@example.com", [r], BODY)
        s.quit()
    ts = [threading.Thread(target=worker, args=(rcpts[i::SESSIONS],)) for i in range(SESSIONS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def wait_count(counter, n, proc, what, spool):
    last, since = -1, time.monotonic()
    while counter.count() < n:
        if proc.poll() is not None:
            raise SystemExit("relay exited: %s" % what)
        if counter.n != last:
            last, since = counter.n, time.monotonic()
        elif time.monotonic() - since > 60:
            q = subprocess.run([os.environ.get("MAILREP_BIN", "build/mailrep"), "queue", "--spool",
                                spool, "--list", "--limit", "5"], capture_output=True, text=True)
            sys.stderr.write(q.stdout[-3000:] + q.stderr[-500:])
            with open(spool + ".log") as f:
                other = [ln for ln in f if '"delivery"' not in ln and '"reception"' not in ln]
            raise SystemExit("no progress for 60 s: %s: %d of %d delivered; other events:\n%s"
                             % (what, counter.n, n, "".join(other[:5])) +
                             "relay output:\n" + open(spool + ".out", errors="replace").read()[-3000:])
        time.sleep(0.05)


def run(binary, work, resolver, sink_port, sites, m, perf=None):
    spool = os.path.join(work, "spool-%d" % sites)
    port = free_port()
    log = open(spool + ".out", "wb")
    p = subprocess.Popen([binary, "relay", "--listen", "127.0.0.1:%d" % port, "--spool", spool,
                          "--trusted", "127.0.0.1", "--resolver", resolver,
                          "--smtp-port", str(sink_port), "--log", spool + ".log",
                          "--max-outbound", "500"],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, p)
        counter = LogCounter(spool + ".log", b'"event":"delivery"')
        send(port, ["u@d%d.sites.test" % i for i in range(sites)])
        wait_count(counter, sites, p, "the first round", spool)
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", perf, "-p",
                                str(p.pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) if perf else None
        cpu0 = cpu_seconds(p.pid)
        t0 = time.monotonic()
        send(port, ["u%d@d%d.sites.test" % (i, i % sites) for i in range(m)])
        wait_count(counter, sites + m, p, "the second round", spool)
        secs = time.monotonic() - t0
        cpu = cpu_seconds(p.pid) - cpu0
        if rec:
            rec.send_signal(signal.SIGINT)
            rec.wait()
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(spool, ignore_errors=True)
    return cpu * 1e6 / m, m / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailrep"))
    ap.add_argument("--sites", type=int, default=5000)
    ap.add_argument("-m", type=int, default=20000)
    ap.add_argument("--perf", help="perf record the second round of the many-sites run into FILE")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="relay-sites-")
    os.chmod(work, 0o755)
    zone = soa("sites.test") + "".join(
        "d%d MX 10 mx%d\nmx%d A 127.0.0.1\n" % (i, i, i) for i in range(a.sites))
    knot = start_knot(work, {"sites.test": zone})
    sink_port = free_port()
    # a deep accept queue: the relay opens up to --max-outbound connections at once
    sink = subprocess.Popen([SINK, "-u", "nobody", "127.0.0.1:%d" % sink_port, "4096"])
    try:
        wait_port(sink_port, sink)
        one = run(a.bin, work, knot.resolver, sink_port, 1, a.m)
        print("1 site:     %6.0f us CPU/msg (%.0f msg/s)" % one, flush=True)
        many = run(a.bin, work, knot.resolver, sink_port, a.sites, a.m, a.perf)
        print("%d sites: %6.0f us CPU/msg (%.0f msg/s)" % ((a.sites,) + many), flush=True)
        print("ratio %d sites / 1 site: %.2f" % (a.sites, many[0] / one[0]))
    finally:
        sink.terminate()
        sink.wait()
        knot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    socket.setdefaulttimeout(120)
    main()
