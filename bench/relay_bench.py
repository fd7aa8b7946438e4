#!/usr/bin/python3
"""relay_bench.py — end-to-end throughput of `mailrep relay` against a
private Postfix instance in the same run, and the relay's memory per
deferred message, all on loopback.

Each run:
  1. smtp-source injects N 4 KB messages over 20 sessions from a trusted
     network into the relay, which DKIM-signs each (RSA-2048), spools it
     durably (group-committed fdatasync) and delivers it to smtp-sink with
     up to 20 connections; the clock stops when the accounting log shows N
     deliveries;
  2. the same injection into Postfix (tests/system/postfix_instance.py):
     mynetworks 127.0.0.0/8, relayhost the same smtp-sink, destination
     concurrency 20; the clock stops when its queue is empty (every message
     delivered: nothing deferred, checked against the maillog's
     status=sent lines).
Postfix does not sign (it would need an OpenDKIM milter); its queue files
are fsync'd as usual. Besides the rates it prints the CPU time (user +
system, from /proc) per message of the relay (every thread) and of Postfix
(master, the children it reaped, and those still running), and their
ratio: on a 2-core machine that also runs smtp-source and smtp-sink, the
CPU per message says more than the rate. After the runs, the relay is started towards a closed
port and N messages stay queued: the growth of its RSS divided by N is the
memory per deferred message.

Usage: bench/relay_bench.py [--bin build/mailrep] [-n 20000] [--runs 3] [--reuse]
                            [--only relay|postfix] [--key rsa|ed25519] [--perf FILE]
                            [--strace FILE] [--relay-arg ARG ...]

By default each smtp-source session opens a new connection for every
message (smtp-source's default); --reuse (smtp-source -d) keeps it for the
next message, as an application injecting through a connection pool does.
Both sides get the same injection. RELAY_BENCH_SWITCHES=1 also prints the
relay's context switches per message, by thread.

--perf records the first run's relay with `perf record -g`; --strace
counts its system calls (`strace -c -f`, which slows it down: that run's
rate is not a measurement).
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
from postfix_instance import PostfixInstance, free_port  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SESSIONS = 20


def wait_port(port, proc=None, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d" % port)


EXTRA = []  # --relay-arg: more options for the relay
REUSE = []  # ["-d"] with --reuse: each session sends all its messages over one connection


def inject(port, n):
    """Runs smtp-source; returns its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([SOURCE] + REUSE + ["-s", str(SESSIONS), "-m", str(n), "-l", "4096",
                    "-f", "a@example.com", "-t", "b@dest.example", "127.0.0.1:%d" % port],
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class LogCounter:
    """Counts lines containing needle in a growing file, reading only what
    was added since the last call."""

    def __init__(self, path, needle):
        self.path, self.needle, self.off, self.n, self.rest = path, needle, 0, 0, b""

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except OSError:
            return self.n
        self.off += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        self.n += data[:cut].count(self.needle)
        return self.n


class Stall:
    """Raises when a progress figure has not moved for `limit` seconds, so
    that a peer that defers mail ends the benchmark instead of hanging it."""

    def __init__(self, figure, limit=60.0):
        self.figure, self.limit = figure, limit
        self.last, self.since = figure(), time.monotonic()

    def check(self, what):
        v = self.figure()
        if v != self.last:
            self.last, self.since = v, time.monotonic()
        elif time.monotonic() - self.since > self.limit:
            raise RuntimeError("no progress for %.0f s: %s" % (self.limit, what))


def start_relay(binary, work, name, route, key, perf=None, strace=None):
    port = free_port()
    spool = os.path.join(work, name)
    out = open(spool + ".out", "wb")
    argv = [binary, "relay", "--listen", "127.0.0.1:%d" % port, "--spool", spool,
            "--route", "*=" + route, "--trusted", "127.0.0.0/8", "--conn-limit", "20",
            "--log", spool + ".log", "--dkim-key", "example.com=s1:" + key] + EXTRA
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, p)
    rec = None
    if perf:
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", perf, "-p", str(p.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    elif strace:
        rec = subprocess.Popen(["strace", "-c", "-f", "-o", strace, "-p", str(p.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    return p, port, spool, rec


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_relay(binary, work, name, sink_port, key, n, perf=None, strace=None):
    p, port, spool, rec = start_relay(binary, work, name, "127.0.0.1:%d" % sink_port, key, perf,
                                      strace)
    counter = LogCounter(spool + ".log", b'"event":"delivery"')
    start = time.monotonic()
    source_cpu = inject(port, n)
    stalled = Stall(lambda: counter.n)
    while counter.count() < n:
        if p.poll() is not None:
            raise RuntimeError("relay exited")
        stalled.check("relay: %d of %d delivered" % (counter.n, n))
        time.sleep(0.02)
    secs = time.monotonic() - start
    cpu = cpu_seconds(p.pid)
    roles = thread_cpu(p.pid)
    if os.environ.get("RELAY_BENCH_SWITCHES"):
        print("       context switches per message (voluntary, involuntary), by thread: " +
              ", ".join("%.2f/%.2f" % (v / n, i / n) for v, i in switches(p.pid)), flush=True)
    if rec:
        rec.send_signal(signal.SIGINT)
        rec.wait()
    stop(p)
    with open(spool + ".out", errors="replace") as f:
        commits = [ln.split("info: ", 1)[-1].strip() for ln in f if "group commit" in ln]
    shutil.rmtree(spool, ignore_errors=True)
    return secs, cpu, roles, commits[-1] if commits else "", source_cpu


def thread_cpu(pid):
    """CPU seconds of a relay's threads by role: "loop" for the main thread
    (the event loop: sessions, scheduler, deliveries), and the name of each
    worker pool (threads named mailrep-sign, mailrep-commit, ...)."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        tid = int(t)
        try:
            with open("/proc/%d/task/%d/comm" % (pid, tid)) as f:
                name = f.read().strip()
            c = cpu_seconds(pid, tid)
        except OSError:
            continue
        role = "loop" if tid == pid else name.replace("mailrep-", "")
        out[role] = out.get(role, 0.0) + c
    return out


def signature_cost(key):
    """CPU microseconds of one signature with this machine's OpenSSL (the
    library the relay signs with), from `openssl speed`; None if unknown."""
    alg = "rsa2048" if key == "rsa" else "ed25519"
    try:
        out = subprocess.run(["openssl", "speed", "-seconds", "2", alg], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for ln in out.splitlines():
        w = ln.split()
        if key == "rsa" and ln.startswith("rsa 2048 bits") and len(w) > 3:
            return float(w[3].rstrip("s")) * 1e6
        if key != "rsa" and len(w) > 6 and w[3] == "(Ed25519)":
            return 1e6 / float(w[6])  # its time column is rounded to 0.0000s: signs a second
    return None


def switches(pid):
    """(voluntary, involuntary) context switches of each thread, the loop first."""
    out = []
    for tid in sorted(int(t) for t in os.listdir("/proc/%d/task" % pid)):
        v = i = 0
        with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
            for ln in f:
                if ln.startswith("voluntary_ctxt_switches:"):
                    v = int(ln.split()[1])
                elif ln.startswith("nonvoluntary_ctxt_switches:"):
                    i = int(ln.split()[1])
        out.append((v, i))
    return out


def cpu_seconds(pid, tid=None):
    """User + system CPU time of a process, all its threads, or of its
    thread tid (the main thread, the event loop's, has tid == pid)."""
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pf):
    """User + system CPU of a Postfix instance: master with the children it
    has reaped (cutime, cstime), plus every child still running (or not yet
    reaped). Postfix's services do not fork further."""
    total = 0.0
    master = pf.master_pid()
    for pid in ([master] if master else []) + (pf.children(master) if master else []):
        try:
            with open("/proc/%d/stat" % pid) as f:
                v = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in v[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def run_postfix(work, sink_port, n):
    with PostfixInstance(sink_port=sink_port, concurrency=SESSIONS,
                         workdir=tempfile.mkdtemp(dir=work, prefix="postfix-")) as pf:
        sent = LogCounter(pf.logfile, b"status=sent")
        cpu0 = tree_cpu_seconds(pf)
        start = time.monotonic()
        source_cpu = inject(pf.port, n)
        stalled = Stall(pf.queue_count)
        while pf.queue_count() > 0:
            stalled.check("postfix: %d messages stay queued\n%s" % (pf.queue_count(),
                                                                   pf.postqueue()))
            time.sleep(0.02)
        secs = time.monotonic() - start
        cpu = tree_cpu_seconds(pf) - cpu0
        deadline = time.time() + 30
        while sent.count() < n and time.time() < deadline:
            time.sleep(0.1)  # the log may trail the queue a little
        if sent.count() != n:
            raise RuntimeError("postfix: queue empty but %d of %d sent" % (sent.count(), n))
    return secs, cpu, source_cpu


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def memory_per_deferred(binary, work, key, n):
    closed = free_port()  # nothing listens there: every delivery is deferred
    p, port, spool, _ = start_relay(binary, work, "deferred", "127.0.0.1:%d" % closed, key)
    try:
        before = rss_kb(p.pid)
        inject(port, n)
        time.sleep(1)
        after = rss_kb(p.pid)
    finally:
        stop(p)
        shutil.rmtree(spool, ignore_errors=True)
    return before, after, (after - before) * 1024 // n


def span(xs):
    return "%.0f" % xs[0] if len(xs) == 1 else "%.0f–%.0f" % (min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailrep"))
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("relay", "postfix"))
    ap.add_argument("--perf", help="perf record -g the relay of the first run into FILE")
    ap.add_argument("--strace", help="strace -c -f the relay of the first run into FILE")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--key", choices=("rsa", "ed25519"), default="rsa",
                    help="the relay's DKIM key (default RSA-2048)")
    ap.add_argument("--reuse", action="store_true",
                    help="smtp-source -d: each session keeps its connection for the next message")
    ap.add_argument("--relay-arg", action="append", default=[],
                    help="one more argument for the relay (repeat it: --relay-arg=--sign-threads "
                         "--relay-arg=1)")
    a = ap.parse_args()
    n = a.n
    EXTRA.extend(a.relay_arg)
    if a.reuse:
        REUSE.append("-d")
    work = tempfile.mkdtemp(prefix="relay-bench-")
    os.chmod(work, 0o755)
    sink_port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", "127.0.0.1:%d" % sink_port, "256"])
    try:
        wait_port(sink_port, sink)
        key = os.path.join(work, "k.pem")
        bits = ["--bits", "2048"] if a.key == "rsa" else []
        subprocess.run([a.bin, "dkim", "keygen", "--type", a.key] + bits +
                       ["--selector", "s1", "--domain", "example.com", "--out", key],
                       check=True, stdout=subprocess.DEVNULL)
        label = "RSA-2048" if a.key == "rsa" else "Ed25519"
        rates_r, rates_p, ratios, cpu_r, cpu_p, cpu_ratios = [], [], [], [], [], []
        load_src, load_sink = [], []
        sig = signature_cost(a.key)
        if sig:
            print("one %s signature with this machine's OpenSSL: %.0f us of CPU (openssl speed)"
                  % (label, sig), flush=True)
        for i in range(a.runs):
            r = p = None
            if a.only != "postfix":
                sink0 = cpu_seconds(sink.pid)
                secs, cpu, roles, commits, src = run_relay(a.bin, work, "spool%d" % i, sink_port, key, n,
                                          a.perf if i == 0 else None,
                                          a.strace if i == 0 else None)
                r = n / secs
                rates_r.append(r)
                cpu_r.append(cpu * 1e6 / n)
                print("run %d: mailrep relay: %d messages end to end in %.2f s: %.0f msg/s "
                      "(DKIM %s, durable spool; CPU %.0f us/msg; %s)"
                      % (i + 1, n, secs, r, label, cpu * 1e6 / n, commits),
                      flush=True)
                print("       relay CPU by thread, us/msg: " +
                      ", ".join("%s %.0f" % (k, v * 1e6 / n)
                                for k, v in sorted(roles.items(), key=lambda kv: -kv[1])),
                      flush=True)
                load_src.append(src * 1e6 / n)
                load_sink.append((cpu_seconds(sink.pid) - sink0) * 1e6 / n)
                print("       load: smtp-source %.0f us/msg, smtp-sink %.0f us/msg"
                      % (load_src[-1], load_sink[-1]), flush=True)
            if a.only != "relay":
                sink0 = cpu_seconds(sink.pid)
                secs, pcpu, src = run_postfix(work, sink_port, n)
                p = n / secs
                rates_p.append(p)
                cpu_p.append(pcpu * 1e6 / n)
                print("run %d: postfix:       %d messages end to end in %.2f s: %.0f msg/s "
                      "(CPU %.0f us/msg, all its processes)" % (i + 1, n, secs, p, cpu_p[-1]),
                      flush=True)
                print("       load: smtp-source %.0f us/msg, smtp-sink %.0f us/msg"
                      % (src * 1e6 / n, (cpu_seconds(sink.pid) - sink0) * 1e6 / n), flush=True)
            if r and p:
                ratios.append(r / p)
                cpu_ratios.append(cpu_p[-1] / cpu_r[-1])
                print("run %d: ratio mailrep/postfix %.2f; CPU per message postfix/mailrep %.2f"
                      % (i + 1, r / p, cpu_ratios[-1]), flush=True)
        print("summary over %d runs of %d messages:" % (a.runs, n))
        if rates_r:
            print("  mailrep relay  %s msg/s" % span(rates_r))
        if rates_p:
            print("  postfix        %s msg/s" % span(rates_p))
        if cpu_r:
            print("  mailrep relay  %s us CPU/msg" % span(cpu_r))
        if cpu_p:
            print("  postfix        %s us CPU/msg" % span(cpu_p))
        if ratios:
            print("  ratio          %s" % (("%.2f" % ratios[0]) if len(ratios) == 1 else
                                           "%.2f–%.2f" % (min(ratios), max(ratios))))
            print("  CPU ratio      %s (postfix CPU per message / mailrep's)"
                  % (("%.2f" % cpu_ratios[0]) if len(cpu_ratios) == 1 else
                     "%.2f–%.2f" % (min(cpu_ratios), max(cpu_ratios))))
        if sig and load_src:
            # an upper bound: the cores minus the load generator and the sink,
            # spent on nothing but one signature per message
            cores = os.cpu_count() or 1
            ceiling = cores * 1e6 / (sig + min(load_src) + min(load_sink))
            print("  ceiling        %.0f msg/s on %d cores: a signature (%.0f us), smtp-source and "
                  "smtp-sink per message and nothing else" % (ceiling, cores, sig), end="")
            print(" = %.2f× the fastest Postfix run" % (ceiling / max(rates_p)) if rates_p else "")
        if not a.no_memory and a.only != "postfix":
            before, after, per = memory_per_deferred(a.bin, work, key, n)
            print("  relay memory: %d messages deferred: RSS %d kB -> %d kB: %d bytes per "
                  "deferred message" % (n, before, after, per))
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
