#!/usr/bin/python3
"""relay_queue_bench.py — the relay with a large deferred queue.

smtp-source injects N small messages (many sessions, from 127.0.0.1, a
trusted network) into `mailrep relay`, whose only next hop is a closed port,
so every message stays queued (deferred). Reported:
  - RSS growth of the relay per queued message (bodies are on disk);
  - the spool's size on disk;
  - the injection rate;
  - the restart: time from start until the whole spool is recovered and
    the relay accepts connections again, and its RSS per message then;
  - the cost of one `mailrep queue` summary over the control socket;
  - administrators' requests on the full queue, each timed from the
    request to the end of the reply on the control socket (no client
    process): `retry id` and `bounce id` of the oldest messages, `resume`
    of a hold that holds nothing, a list's first page of 10,000 and the
    page after it (median of 5, or of as many as were run).
The spool is deleted at the end.

Usage: bench/relay_queue_bench.py [--bin build/mailrep] [-n N] [--sessions S]
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
from postfix_instance import free_port  # noqa: E402
from relay_bench import rss_kb  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"


def wait_port(port, proc, timeout=3600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("relay exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit("relay did not listen on %d" % port)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def queue_summary(binary, spool):
    t = time.time()
    q = subprocess.run([binary, "queue", "--spool", spool, "--json"], capture_output=True,
                       timeout=600)
    if q.returncode != 0:
        raise SystemExit("mailrep queue failed: %s" % q.stderr.decode())
    import json
    doc = json.loads(q.stdout)
    return doc, time.time() - t


def ctl(spool, line):
    """One control request, timed; returns (reply, seconds)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(600)
    s.connect(os.path.join(spool, "control"))
    t = time.perf_counter()
    s.sendall(line.encode() + b"\n")
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    secs = time.perf_counter() - t
    s.close()
    import json
    return json.loads(data), secs


def median_ms(secs):
    secs = sorted(secs)
    return 1000.0 * secs[len(secs) // 2]


def admin(binary, spool):
    """Times administrators' requests on the full queue (see the top)."""
    q = subprocess.run([binary, "queue", "--spool", spool, "--offline", "--list", "--json"],
                       capture_output=True, timeout=600)
    import json
    oldest = [m["id"] for m in json.loads(q.stdout)["messages"][:6]]  # in spool order
    retry = []
    for _ in range(5):
        r, secs = ctl(spool, "retry id " + oldest[0])
        if not r.get("ok"):
            raise SystemExit("retry id: %s" % r)
        retry.append(secs)
    bounce = []
    for qid in oldest[1:6]:
        r, secs = ctl(spool, "bounce id " + qid)
        if not r.get("ok"):
            raise SystemExit("bounce id: %s" % r)
        bounce.append(secs)
    resume = []
    for _ in range(5):
        ctl(spool, "suspend domain idle.example")
        r, secs = ctl(spool, "resume domain idle.example")
        if not r.get("ok"):
            raise SystemExit("resume: %s" % r)
        resume.append(secs)
    first, lsecs = ctl(spool, "list 10000")
    line = "relay queue: admin: retry id %.2f ms, bounce id %.2f ms, resume %.2f ms, " \
        "list of 10,000 %.0f ms" % (median_ms(retry), median_ms(bounce), median_ms(resume),
                                    1000.0 * lsecs)
    if first.get("next"):
        page, psecs = ctl(spool, "list 10000 after %d" % first["next"])
        line += ", the page after it %.0f ms (%d messages)" % (1000.0 * psecs,
                                                            len(page.get("messages", [])))
    print(line)
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/mailrep")
    ap.add_argument("-n", type=int, default=1000000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", type=int, default=300, help="message size in bytes")
    ap.add_argument("--dir", default=None, help="where the spool goes (default: a temp dir)")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="relayq-", dir=a.dir)
    os.chmod(work, 0o755)  # the relay runs as nobody once bound
    spool = os.path.join(work, "spool")
    port, closed = free_port(), free_port()
    argv = [binary, "relay", "--listen", "127.0.0.1:%d" % port, "--spool", spool,
            "--route", "*=127.0.0.1:%d" % closed, "--trusted", "127.0.0.0/8",
            # smtp-source reconnects as soon as it has the 221 to its QUIT,
            # possibly before the relay has freed that session
            "--hostname", "bench.test", "--max-conns", str(2 * a.sessions + 16)]
    out = open(os.path.join(work, "relay.out"), "ab")
    relay = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, relay)
        time.sleep(0.5)
        before = rss_kb(relay.pid)
        t0 = time.time()
        subprocess.run([SMTP_SOURCE, "-s", str(a.sessions), "-m", str(a.n), "-l", str(a.size),
                        "-f", "sender@example.com", "-t", "rcpt@dest.example",
                        "127.0.0.1:%d" % port], check=True, stdout=subprocess.DEVNULL)
        inject = time.time() - t0
        time.sleep(2)  # the first (refused) attempts of the last messages
        after = rss_kb(relay.pid)
        doc, qsecs = queue_summary(binary, spool)
        queued = doc["total"]["messages"]
        print("relay queue: %d messages injected in %.1f s (%.0f msg/s, %d sessions, %d-byte "
              "messages); %d queued" % (a.n, inject, a.n / inject, a.sessions, a.size, queued))
        print("relay queue: RSS %d kB -> %d kB: %.0f bytes per queued message"
              % (before, after, (after - before) * 1024.0 / max(queued, 1)))
        print("relay queue: spool %.1f MB on disk (%.0f bytes per message)"
              % (du(spool) / 1e6, du(spool) / max(queued, 1)))
        print("relay queue: `mailrep queue` summary over the control socket: %.2f s" % qsecs)
        sys.stdout.flush()
        admin(binary, spool)
        if queued != a.n:
            print("relay queue: WARNING: %d messages expected in the queue" % a.n)
        queued = ctl(spool, "summary")[0]["total"]["messages"]  # the bounces' DSNs
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=600)
        t0 = time.time()
        relay = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_port(port, relay)
        restart = time.time() - t0
        rss = rss_kb(relay.pid)
        print("relay queue: restart with %d messages: listening again after %.2f s, RSS %d kB "
              "(%.0f bytes per message over the empty relay's %d kB)"
              % (queued, restart, rss, (rss - before) * 1024.0 / max(queued, 1), before))
        doc, qsecs = queue_summary(binary, spool)
        if doc["total"]["messages"] != queued:
            print("relay queue: WARNING: %d messages after the restart"
                  % doc["total"]["messages"])
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=600)
        if relay.returncode != 0:
            print("relay queue: WARNING: relay exited with %d" % relay.returncode)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
        out.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
