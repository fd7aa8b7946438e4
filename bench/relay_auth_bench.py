#!/usr/bin/python3
"""relay_auth_bench.py — what AUTH costs the relay's event loop, and what
authenticated submission costs in syncs, for one or two builds of mailrep
(typically main and a branch) in the same run, on loopback.

For each binary:
  1. AUTH storm: 16 clients each send one AUTH PLAIN with a wrong password
     (a full PBKDF2-HMAC-SHA256 check, 100,000 iterations, every time) while
     a probe client sends NOOP round trips; reported: the time until the
     16 answers, and the probe's worst round trip (how long the loop was
     blocked);
  2. submission over persistent sessions: --sessions clients, each
     authenticates once and sends its share of -n 2 KB messages (one
     recipient each) to the relay, which spools them durably and delivers
     to smtp-sink; reported: messages per second until the last 250;
  3. one connection per message (an ESP's client that reconnects for each
     message, authenticating each time): messages per second;
  4. with --strace, run 2 again under `strace -f -c` and report the
     fsync/fdatasync calls per message (strace slows the relay: its rate
     is not reported).

Usage: bench/relay_auth_bench.py [--bin build/mailrep] [--before OTHER] [-n 2000]
                                 [--sessions 20] [--strace]
"""
import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
from postfix_instance import free_port  # noqa: E402
from relay_bench import wait_port  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
PASSWORD = "bench-password"
BODY = ("From: a@example.com\r\nTo: b@dest.example\r\nSubject: bench\r\n\r\n" +
        ("x" * 76 + "\r\n") * 26)


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self.reply()

    def reply(self):
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line.decode()

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.reply()

    def auth(self, user, pw):
        tok = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        return self.cmd("AUTH PLAIN " + tok)

    def send(self, i):
        # pipelined: MAIL, RCPT, DATA in one write
        self.s.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b%d@dest.example>\r\nDATA\r\n" % i)
        for _ in range(3):
            r = self.reply()
        assert r.startswith("354"), r
        r = self.cmd(BODY + ".")
        assert r.startswith("250"), r

    def close(self):
        try:
            self.cmd("QUIT")
        except OSError:
            pass
        self.s.close()


def start(binary, work, sink_port, wrap=()):
    spool = os.path.join(work, "spool")
    shutil.rmtree(spool, ignore_errors=True)
    h = subprocess.run([binary, "relay", "--hash-password"], input=PASSWORD.encode(),
                       capture_output=True, check=True).stdout.decode().strip()
    cfg = os.path.join(work, "relay.ini")
    with open(cfg, "w") as f:
        f.write("[relay]\nauth-without-tls = yes\n\n[account bench]\npassword = %s\n" % h)
    port = free_port()
    argv = list(wrap) + [binary, "relay", "-c", cfg, "--listen", "127.0.0.1:%d" % port,
                         "--spool", spool, "--route", "*=127.0.0.1:%d" % sink_port,
                         "--hostname", "relay.test", "--max-conns", "1024"]
    log = open(os.path.join(work, "relay.log"), "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, p)
    return p, port


def stop(p, traced=False):
    """SIGTERM to the relay (under strace: to its traced child)."""
    pid = p.pid
    if traced:
        with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
            pid = int(f.read().split()[0])
    os.kill(pid, signal.SIGTERM)
    p.wait(60)


def auth_storm(port, n=16):
    conns = [Client(port) for _ in range(n)]
    for c in conns:
        c.cmd("EHLO bench.test")
    probe = Client(port)
    probe.cmd("EHLO probe.test")
    worst = [0.0]
    done = threading.Event()

    def probing():
        while not done.is_set():
            t = time.time()
            probe.cmd("NOOP")
            worst[0] = max(worst[0], time.time() - t)
            time.sleep(0.01)
    th = threading.Thread(target=probing)
    th.start()
    t0 = time.time()
    tok = "AUTH PLAIN %s\r\n"
    for i, c in enumerate(conns):
        bad = base64.b64encode(b"\0bench\0wrong-%d" % i).decode()
        c.s.sendall((tok % bad).encode())
    for c in conns:
        r = c.reply()
        assert r.startswith("535"), r
    took = time.time() - t0
    done.set()
    th.join()
    for c in conns + [probe]:
        c.close()
    return took, worst[0]


def submit_persistent(port, n, sessions):
    per = n // sessions

    def one(k):
        c = Client(port)
        c.cmd("EHLO bench.test")
        assert c.auth("bench", PASSWORD).startswith("235")
        for i in range(per):
            c.send(k * per + i)
        c.close()
    ths = [threading.Thread(target=one, args=(k,)) for k in range(sessions)]
    t0 = time.time()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return per * sessions / (time.time() - t0), per * sessions


def submit_reconnecting(port, n, sessions):
    per = n // sessions

    def one(k):
        for i in range(per):
            c = Client(port)
            c.cmd("EHLO bench.test")
            assert c.auth("bench", PASSWORD).startswith("235")
            c.send(k * per + i)
            c.close()
    ths = [threading.Thread(target=one, args=(k,)) for k in range(sessions)]
    t0 = time.time()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return per * sessions / (time.time() - t0)


def syncs_per_message(binary, work, sink_port, n, sessions):
    out = os.path.join(work, "strace.txt")
    p, port = start(binary, work, sink_port,
                    wrap=["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", out])
    done, msgs = submit_persistent(port, n, sessions)
    stop(p, traced=True)
    calls = 0
    with open(out) as f:
        for line in f:
            w = line.split()
            if w and w[-1] in ("fsync", "fdatasync"):
                calls += int(w[3])
    return calls / msgs, calls, msgs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailrep"))
    ap.add_argument("--before", help="a second binary (e.g. main's) measured in the same run")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--strace", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mailrep-auth-bench-")
    os.chmod(work, 0o755)
    sink_port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", "127.0.0.1:%d" % sink_port, "256"])
    wait_port(sink_port, sink)
    try:
        bins = ([("before", a.before)] if a.before else []) + [("this", a.bin)]
        for name, binary in bins:
            p, port = start(binary, work, sink_port)
            took, worst = auth_storm(port)
            rate, _ = submit_persistent(port, a.n, a.sessions)
            rrate = submit_reconnecting(port, a.n // 4, a.sessions)
            stop(p)
            print("%-6s AUTH storm: 16 checks in %.2f s, probe's worst round trip %.0f ms"
                  % (name, took, worst * 1000))
            print("%-6s submission, persistent sessions: %.0f msg/s (%d sessions)"
                  % (name, rate, a.sessions))
            print("%-6s submission, one connection and AUTH per message: %.0f msg/s"
                  % (name, rrate))
            if a.strace:
                per, calls, msgs = syncs_per_message(binary, work, sink_port, a.n, a.sessions)
                print("%-6s fsync+fdatasync: %d for %d messages, %.2f per message"
                      % (name, calls, msgs, per))
            sys.stdout.flush()
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
