#!/usr/bin/python3
"""Benchmark `mailrep dnsbl` against rbldnsd and a do-nothing floor responder.

The main figure is *server CPU time per answered query*: the server's
utime+stime (clock ticks, /proc/PID/stat, all threads) consumed while dnsperf
runs, divided by the number of queries dnsperf saw answered.  Wall-clock QPS
is reported too but is not used for the targets, because the machine is small
(2 cores shared by dnsperf and the server) and noisy.

Per repetition and server (servers interleaved, order rotated each repetition):

  1. start the server with an empty dataset (only $SOA/$NS/default line), wait
     until it answers, read VmRSS, stop it;
  2. start it with the full dataset, measure the time from exec until it first
     answers a query for a listed IP correctly (polled every 10 ms), read VmRSS;
     check a few answers for correctness;
  3. warm up with a short dnsperf run, read CPU ticks, run dnsperf, read CPU
     ticks again, stop the server.

The medians over the repetitions are printed as a table, followed by the
mailrep/rbldnsd and mailrep/floor ratios and a PASS/FAIL line per target.
Results (medians, every individual run, parameters) go to bench/out/dnsbl.json.

Only 127.0.0.1 is used.  Run with /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"

ZONE = "bl.example.test"
LISTED_A = "127.0.0.2"
TXT_TEMPLATE = "Listed, see http://example.test/lookup?ip=$"
DATA_HEADER = (
    "$SOA 3600 ns.example.test. hostmaster.example.test. 1 600 300 86400 300\n"
    "$NS 3600 ns.example.test.\n"
    f":{LISTED_A}:{TXT_TEMPLATE}\n"
)
ADDR = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ("rbldnsd", "mailrep", "floor")

# Targets: (key, label, ratio name, limit)
TARGETS = (
    ("cpu_vs_rbldnsd", "CPU/query <= 0.70 x rbldnsd", 0.70),
    ("cpu_vs_floor", "CPU/query <= 1.15 x floor", 1.15),
    ("mem_vs_rbldnsd", "RSS (data bytes/entry) <= 0.50 x rbldnsd", 0.50),
    ("load_vs_rbldnsd", "load time <= rbldnsd", 1.00),
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Data generation


def _valid_first_octet(a: int) -> bool:
    # avoid 0/8, 127/8 and 224/4 and above (multicast, reserved, broadcast)
    return a != 0 and a != 127 and a < 224


def _ip_str(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def _rev_name(v: int) -> str:
    return f"{v & 255}.{(v >> 8) & 255}.{(v >> 16) & 255}.{v >> 24}.{ZONE}"


def random_ips(rng: random.Random, n: int, exclude: set[int] | None = None) -> list[int]:
    """n distinct random unicast IPv4 addresses (as ints), none in exclude."""
    seen: set[int] = set()
    out: list[int] = []
    getrandbits = rng.getrandbits
    while len(out) < n:
        v = getrandbits(32)
        if not _valid_first_octet(v >> 24) or v in seen:
            continue
        if exclude is not None and v in exclude:
            continue
        seen.add(v)
        out.append(v)
    return out


def generate_data(workdir: Path, entries: int, queries: int, seed: int) -> dict:
    """Write data.ip4set, empty.ip4set and queries.txt into workdir."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    listed = random_ips(rng, entries)
    listed_set = set(listed)

    data = workdir / "data.ip4set"
    with open(data, "w") as f:
        f.write(DATA_HEADER)
        # unsorted, like real-world feeds: the server has to sort/index it
        chunk = 65536
        for i in range(0, len(listed), chunk):
            f.write("\n".join(_ip_str(v) for v in listed[i:i + chunk]))
            f.write("\n")
    empty = workdir / "empty.ip4set"
    empty.write_text(DATA_HEADER)

    n_listed = queries // 2
    n_unlisted = queries - n_listed
    q_listed = [listed[rng.randrange(len(listed))] for _ in range(n_listed)] if listed else []
    q_unlisted = random_ips(rng, n_unlisted, exclude=listed_set)
    qs = [(v, True) for v in q_listed] + [(v, False) for v in q_unlisted]
    rng.shuffle(qs)
    qfile = workdir / "queries.txt"
    with open(qfile, "w") as f:
        f.write("".join(f"{_rev_name(v)} A\n" for v, _ in qs))

    for p in (data, empty, qfile):
        os.chmod(p, 0o644)
    # A few addresses for readiness polling and correctness checks.
    probe_listed = listed[:8]
    probe_unlisted = random_ips(random.Random(seed + 1), 8, exclude=listed_set)
    return {
        "data": data,
        "empty": empty,
        "queries": qfile,
        "entries": entries,
        "n_queries": len(qs),
        "n_queries_listed": n_listed,
        "probe_listed": probe_listed,
        "probe_unlisted": probe_unlisted,
        "gen_seconds": time.monotonic() - t0,
        "data_bytes": data.stat().st_size,
    }


# --------------------------------------------------------------------------
# Minimal DNS client (readiness polling and correctness checks)

TYPE_A, TYPE_TXT = 1, 16


def dns_query(qid: int, name: str, qtype: int) -> bytes:
    hdr = struct.pack("!HHHHHH", qid, 0x0000, 1, 0, 0, 0)  # no RD: authoritative query
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    return hdr + q + struct.pack("!HH", qtype, 1)


def _skip_name(buf: bytes, off: int) -> int:
    while True:
        if off >= len(buf):
            raise ValueError("truncated name")
        ln = buf[off]
        if ln == 0:
            return off + 1
        if ln & 0xC0 == 0xC0:
            return off + 2
        off += 1 + ln


def dns_parse(buf: bytes) -> dict:
    """Parse header and answer RRs (type, rdata) of a response."""
    if len(buf) < 12:
        raise ValueError("short packet")
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", buf[:12])
    res = {"id": qid, "qr": bool(flags & 0x8000), "rcode": flags & 0xF,
           "aa": bool(flags & 0x0400), "tc": bool(flags & 0x0200), "answers": []}
    off = 12
    try:
        for _ in range(qd):
            off = _skip_name(buf, off) + 4
        for _ in range(an):
            off = _skip_name(buf, off)
            rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
            off += 10
            res["answers"].append((rtype, buf[off:off + rdlen]))
            off += rdlen
    except (ValueError, struct.error, IndexError):
        res["malformed"] = True
    return res


def _txt_strings(rdata: bytes) -> str:
    out, off = [], 0
    while off < len(rdata):
        ln = rdata[off]
        out.append(rdata[off + 1:off + 1 + ln].decode("latin-1"))
        off += 1 + ln
    return "".join(out)


class Prober:
    """UDP client for one server port."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDR, 0))
        self.addr = (ADDR, port)
        self.qid = random.Random(port).randrange(65536)

    def close(self) -> None:
        self.sock.close()

    def send(self, name: str, qtype: int) -> int:
        self.qid = (self.qid + 1) & 0xFFFF
        self.sock.sendto(dns_query(self.qid, name, qtype), self.addr)
        return self.qid

    def recv(self, timeout: float) -> dict | None:
        self.sock.settimeout(max(timeout, 0.0001))
        try:
            buf, peer = self.sock.recvfrom(65535)
        except (socket.timeout, ConnectionRefusedError, OSError):
            return None
        if peer[:2] != self.addr:
            return None
        try:
            return dns_parse(buf)
        except ValueError:
            return None

    def ask(self, name: str, qtype: int, timeout: float = 1.0, tries: int = 3) -> dict | None:
        for _ in range(tries):
            qid = self.send(name, qtype)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                r = self.recv(left)
                if r is not None and r["id"] == qid:
                    return r
        return None


# --------------------------------------------------------------------------
# Process control and /proc readings

LIVE: dict[int, subprocess.Popen] = {}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(200):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((ADDR, 0))
            port = u.getsockname()[1]
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((ADDR, port))
                return port
            except OSError:
                continue
            finally:
                t.close()
        finally:
            u.close()
    raise RuntimeError("no free port")


def cpu_ticks(pid: int) -> int:
    """utime+stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15
    return int(fields[11]) + int(fields[12])


def cpu_ns_schedstat(pid: int) -> int | None:
    """Sum of on-CPU ns over the live threads (finer-grained cross-check)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def udp_rcvbuf_errors() -> int | None:
    """Host-wide (network namespace) UDP receive-buffer overflow counter."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already included in user/nice
    return total - idle, total


def wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to max_wait s) until other processes use < threshold cores.

    Returns the busy cores seen in the last 1 s sample.
    """
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = host_cpu_ticks()
        time.sleep(1.0)
        b1, _ = host_cpu_ticks()
        busy = (b1 - b0) / CLK_TCK
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        log(f"  machine busy ({busy:.2f} cores used by other processes); waiting ...")


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not found for pid {pid}")


def num_threads(pid: int) -> int:
    return proc_status_kb(pid, "Threads")


def make_preexec(mem_cap_mb: int, cpu_cap_s: int):
    def preexec() -> None:
        # ulimit-style caps for the servers
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if mem_cap_mb > 0:
            cap = mem_cap_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        if cpu_cap_s > 0:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap_s, cpu_cap_s + 10))
    return preexec


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    except ProcessLookupError:
        pass
    finally:
        LIVE.pop(proc.pid, None)


def stop_all() -> None:
    for proc in list(LIVE.values()):
        stop(proc)


class ServerDied(RuntimeError):
    pass


class Server:
    def __init__(self, name: str, args: argparse.Namespace, logdir: Path):
        self.name = name
        self.args = args
        self.logdir = logdir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.logfile: Path | None = None

    @property
    def has_data(self) -> bool:
        return self.name != "floor"

    def argv(self, port: int, datafile: Path | None) -> list[str]:
        a = self.args
        bind = f"{ADDR}/{port}"
        if self.name == "rbldnsd":
            argv = [a.rbldnsd, "-n", "-b", bind]
            if a.user:
                argv += ["-u", a.user]
            argv.append(f"{ZONE}:ip4set:{datafile}")
        elif self.name == "mailrep":
            argv = [a.mailrep, "dnsbl", "-n", "-b", bind]
            if a.user:
                argv += ["-u", a.user]
            if a.mailrep_threads:
                argv += ["--threads", str(a.mailrep_threads)]
            if a.mailrep_coalesce is not None:
                argv += ["--coalesce", str(a.mailrep_coalesce)]
            argv.append(f"{ZONE}:ip4set:{datafile}")
        elif self.name == "floor":
            argv = [str(a.floor), ADDR, str(port), str(a.floor_threads)]
        else:
            raise ValueError(self.name)
        # Never run any server in a debug/dump mode.
        assert "-d" not in argv[1:-1], argv
        return argv

    def start(self, datafile: Path | None, tag: str) -> float:
        """Start the server; returns the monotonic time just before exec."""
        self.port = free_port()
        argv = self.argv(self.port, datafile)
        self.logfile = self.logdir / f"{self.name}-{tag}.log"
        logf = open(self.logfile, "w")
        logf.write("# " + " ".join(argv) + "\n")
        logf.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            preexec_fn=make_preexec(self.args.mem_cap_mb, self.args.cpu_cap_s),
            cwd="/", close_fds=True)
        logf.close()
        LIVE[self.proc.pid] = self.proc
        return t0

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines() if self.logfile else []
        except OSError:
            return ""
        return "\n".join("    " + l for l in lines[-n:])

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            raise ServerDied(f"{self.name} exited (status {rc}); log {self.logfile}:\n{self.log_tail()}")

    def wait_ready(self, probe_name: str | None, timeout: float) -> float:
        """Poll every 10 ms until a good answer arrives; return its monotonic time.

        probe_name: a listed IP's name for a loaded server (must get NOERROR
        with an answer), or None (any response with QR set and rcode
        NOERROR/NXDOMAIN counts).
        """
        pr = Prober(self.port)
        name = probe_name or _rev_name(0x0A000001)
        try:
            deadline = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError(f"{self.name} did not answer within {timeout}s")
                self.check_alive()
                try:
                    pr.send(name, TYPE_A)
                except OSError:
                    pass  # e.g. ECONNREFUSED from an earlier ICMP error
                tick_end = now + 0.010
                while (left := tick_end - time.monotonic()) > 0:
                    r = pr.recv(left)
                    if r is None or not r["qr"]:
                        continue
                    t = time.monotonic()
                    if probe_name is None:
                        if r["rcode"] in (0, 3):
                            return t
                    elif r["rcode"] == 0 and any(rt == TYPE_A for rt, _ in r["answers"]):
                        return t
        finally:
            pr.close()

    def correctness(self, gen: dict) -> list[str]:
        """A few spot checks; returns a list of problems (empty = OK)."""
        problems = []
        pr = Prober(self.port)
        try:
            for v in gen["probe_listed"][:4]:
                r = pr.ask(_rev_name(v), TYPE_A)
                if r is None:
                    problems.append(f"A {_ip_str(v)} (listed): no answer")
                    continue
                a = [socket.inet_ntoa(d) for t, d in r["answers"] if t == TYPE_A and len(d) == 4]
                if r["rcode"] != 0 or a != [LISTED_A]:
                    problems.append(f"A {_ip_str(v)} (listed): rcode {r['rcode']} answers {a}")
                r = pr.ask(_rev_name(v), TYPE_TXT)
                want = TXT_TEMPLATE.replace("$", _ip_str(v))
                txt = [_txt_strings(d) for t, d in (r["answers"] if r else []) if t == TYPE_TXT]
                if r is None or r["rcode"] != 0 or txt != [want]:
                    problems.append(f"TXT {_ip_str(v)} (listed): got {txt!r}, want {want!r}")
            for v in gen["probe_unlisted"][:4]:
                r = pr.ask(_rev_name(v), TYPE_A)
                if r is None or r["rcode"] != 3 or r["answers"]:
                    problems.append(f"A {_ip_str(v)} (unlisted): "
                                    + ("no answer" if r is None else
                                       f"rcode {r['rcode']} ancount {len(r['answers'])}"))
        finally:
            pr.close()
        return problems


# --------------------------------------------------------------------------
# dnsperf


def dnsperf_argv(args: argparse.Namespace, port: int, qfile: Path, seconds: float | None,
                 passes: int | None) -> list[str]:
    argv = [args.dnsperf, "-s", ADDR, "-p", str(port), "-d", str(qfile),
            "-c", str(args.clients), "-T", str(args.dnsperf_threads),
            "-q", str(args.outstanding), "-t", str(args.timeout)]
    if passes:
        argv += ["-n", str(passes)]
    if seconds:
        argv += ["-l", f"{seconds:g}"]
    if args.rate > 0:
        argv += ["-Q", str(args.rate)]
    return argv


_RE = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "run_time": re.compile(r"Run time \(s\):\s+([\d.]+)"),
    "latency_avg": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}
_RE_RCODES = re.compile(r"Response codes:\s+(.*)")
_RE_RCODE = re.compile(r"([A-Z]+) (\d+) \(")


def parse_dnsperf(out: str) -> dict:
    res: dict = {}
    for k, rx in _RE.items():
        m = rx.search(out)
        if not m:
            raise RuntimeError(f"cannot parse dnsperf output ({k}):\n{out}")
        res[k] = float(m.group(1)) if k in ("qps", "run_time", "latency_avg") else int(m.group(1))
    m = _RE_RCODES.search(out)
    res["rcodes"] = {k: int(v) for k, v in _RE_RCODE.findall(m.group(1))} if m else {}
    return res


def run_dnsperf(args: argparse.Namespace, port: int, qfile: Path, seconds: float | None,
                passes: int | None, logfile: Path) -> dict:
    argv = dnsperf_argv(args, port, qfile, seconds, passes)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logfile, "w") as lf:
        lf.write("# " + " ".join(argv) + "\n")
        lf.flush()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        lf.write(p.stdout)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({p.returncode}):\n{p.stdout}")
    res = parse_dnsperf(p.stdout)
    res["dnsperf_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["argv"] = argv
    return res


# --------------------------------------------------------------------------
# One measurement


def measure(srv: Server, gen: dict, rep: int, args: argparse.Namespace) -> dict:
    r: dict = {"server": srv.name, "rep": rep}
    probe = _rev_name(gen["probe_listed"][0]) if gen["probe_listed"] else None

    if srv.has_data:
        srv.start(gen["empty"], f"empty-r{rep}")
        try:
            srv.wait_ready(None, args.ready_timeout)
            time.sleep(0.05)
            r["rss_empty_kb"] = proc_status_kb(srv.proc.pid, "VmRSS")
        finally:
            stop(srv.proc)

    t0 = srv.start(gen["data"] if srv.has_data else None, f"r{rep}")
    try:
        t_ready = srv.wait_ready(probe if srv.has_data else None, args.ready_timeout)
        pid = srv.proc.pid
        r["load_s"] = t_ready - t0
        r["rss_kb"] = proc_status_kb(pid, "VmRSS")
        # the private part: RSS less the shared libraries' file pages, which
        # follow the page cache (what else runs) rather than the server
        r["rss_anon_kb"] = proc_status_kb(pid, "RssAnon")
        r["hwm_kb"] = proc_status_kb(pid, "VmHWM")
        r["threads"] = num_threads(pid)
        if srv.has_data:
            r["rss_data_kb"] = r["rss_kb"] - r["rss_empty_kb"]
            r["data_bytes_per_entry"] = r["rss_data_kb"] * 1024 / gen["entries"]
            r["check_problems"] = srv.correctness(gen)
            if r["check_problems"]:
                log(f"  WARNING: {srv.name} answers look wrong: {r['check_problems'][:3]}")

        if args.quiet_wait > 0:
            r["busy_cores_before"] = wait_quiet(args.quiet_wait, args.quiet_threshold)
        srv.check_alive()
        if args.warmup > 0:
            run_dnsperf(args, srv.port, gen["queries"], args.warmup, None,
                        srv.logdir / f"dnsperf-{srv.name}-r{rep}-warmup.log")
        srv.check_alive()
        hb0, _ = host_cpu_ticks()
        ticks0, ns0, rbe0 = cpu_ticks(pid), cpu_ns_schedstat(pid), udp_rcvbuf_errors()
        dp = run_dnsperf(args, srv.port, gen["queries"],
                         None if args.passes else args.seconds, args.passes,
                         srv.logdir / f"dnsperf-{srv.name}-r{rep}.log")
        ticks1, ns1, rbe1 = cpu_ticks(pid), cpu_ns_schedstat(pid), udp_rcvbuf_errors()
        hb1, _ = host_cpu_ticks()
        srv.check_alive()
        r["rss_after_kb"] = proc_status_kb(pid, "VmRSS")
    finally:
        stop(srv.proc)

    r.update({k: dp[k] for k in ("sent", "completed", "lost", "qps", "run_time",
                                 "latency_avg", "rcodes", "dnsperf_cpu_s")})
    r["dnsperf_argv"] = dp["argv"]
    r["udp_rcvbuf_errors"] = None if rbe0 is None or rbe1 is None else rbe1 - rbe0
    r["cpu_ticks"] = ticks1 - ticks0
    r["cpu_s"] = (ticks1 - ticks0) / CLK_TCK
    # Host-wide busy cores during the run (server + dnsperf + everything else;
    # /proc/stat is tick-sampled, so this is only a rough noise indicator).
    r["host_busy_cores"] = (hb1 - hb0) / CLK_TCK / dp["run_time"] if dp["run_time"] else None
    r["cpu_us_per_query"] = (r["cpu_s"] / dp["completed"] * 1e6) if dp["completed"] else None
    if ns0 is not None and ns1 is not None and dp["completed"]:
        r["schedstat_us_per_query"] = (ns1 - ns0) / 1e3 / dp["completed"]
    if srv.has_data and dp["completed"]:
        r["noerror_fraction"] = r["rcodes"].get("NOERROR", 0) / dp["completed"]
    return r


# --------------------------------------------------------------------------
# Reporting

METRICS = ("load_s", "rss_kb", "rss_anon_kb", "rss_empty_kb", "data_bytes_per_entry", "qps", "lost",
           "sent", "completed", "cpu_us_per_query", "schedstat_us_per_query",
           "dnsperf_cpu_s", "noerror_fraction", "hwm_kb", "latency_avg", "udp_rcvbuf_errors",
           "cpu_ticks", "host_busy_cores")


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, spec: str, width: int) -> str:
    return format("-" if v is None else format(v, spec), f">{width}")


def report(results: dict, names: list[str], args: argparse.Namespace) -> dict:
    med = {n: {k: median_of(results[n], k) for k in METRICS} for n in names if results.get(n)}

    lines = []
    hdr = (f"{'server':<10}{'load s':>9}{'RSS MB':>9}{'data B/entry':>14}"
           f"{'QPS':>11}{'lost':>8}{'CPU us/query':>14}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for n in names:
        m = med.get(n)
        if m is None:
            lines.append(f"{n:<10}{'(not run)':>9}")
            continue
        rss_mb = m["rss_kb"] / 1024 if m["rss_kb"] is not None else None
        lines.append(f"{n:<10}{fmt(m['load_s'], '.3f', 9)}{fmt(rss_mb, '.1f', 9)}"
                     f"{fmt(m['data_bytes_per_entry'], '.1f', 14)}{fmt(m['qps'], '.0f', 11)}"
                     f"{fmt(m['lost'], '.0f', 8)}{fmt(m['cpu_us_per_query'], '.3f', 14)}")

    g = lambda n, k: med.get(n, {}).get(k)  # noqa: E731
    ratios = {
        "cpu_vs_rbldnsd": ratio(g("mailrep", "cpu_us_per_query"), g("rbldnsd", "cpu_us_per_query")),
        "mem_vs_rbldnsd": ratio(g("mailrep", "data_bytes_per_entry"),
                                g("rbldnsd", "data_bytes_per_entry")),
        "rss_total_vs_rbldnsd": ratio(g("mailrep", "rss_kb"), g("rbldnsd", "rss_kb")),
        "rss_anon_vs_rbldnsd": ratio(g("mailrep", "rss_anon_kb"), g("rbldnsd", "rss_anon_kb")),
        "load_vs_rbldnsd": ratio(g("mailrep", "load_s"), g("rbldnsd", "load_s")),
        "cpu_vs_floor": ratio(g("mailrep", "cpu_us_per_query"), g("floor", "cpu_us_per_query")),
        "rbldnsd_cpu_vs_floor": ratio(g("rbldnsd", "cpu_us_per_query"),
                                      g("floor", "cpu_us_per_query")),
    }
    r2 = lambda k: fmt(ratios[k], ".2f", 0)  # noqa: E731
    lines.append("")
    lines.append(f"mailrep/rbldnsd: CPU/query {r2('cpu_vs_rbldnsd')}, "
                 f"data bytes/entry {r2('mem_vs_rbldnsd')} (total RSS {r2('rss_total_vs_rbldnsd')}, "
                 f"private RSS {r2('rss_anon_vs_rbldnsd')}), "
                 f"load time {r2('load_vs_rbldnsd')}")
    lines.append(f"mailrep/floor:   CPU/query {r2('cpu_vs_floor')}   "
                 f"(rbldnsd/floor: {r2('rbldnsd_cpu_vs_floor')})")
    lines.append("")
    verdicts = {}
    for key, label, limit in TARGETS:
        v = ratios[key]
        verdict = "SKIP" if v is None else ("PASS" if v <= limit else "FAIL")
        verdicts[key] = verdict
        lines.append(f"{verdict}  {label:<42} (ratio {fmt(v, '.2f', 0)})")

    warnings = []
    for n in names:
        for r in results.get(n, []):
            if r.get("check_problems"):
                warnings.append(f"{n} rep {r['rep']}: wrong answers: {r['check_problems'][:2]}")
            nf = r.get("noerror_fraction")
            if nf is not None and abs(nf - 0.5) > 0.01:
                warnings.append(f"{n} rep {r['rep']}: NOERROR fraction {nf:.3f}, expected 0.500")
            if r.get("sent") and r["lost"] > 0.001 * r["sent"]:
                warnings.append(f"{n} rep {r['rep']}: {r['lost']} of {r['sent']} queries lost"
                                " (server saturated? lower --rate)")
            if (r.get("busy_cores_before") or 0) >= args.quiet_threshold:
                warnings.append(f"{n} rep {r['rep']}: machine was not idle before the run "
                                f"({r['busy_cores_before']:.2f} cores busy)")
            if r.get("cpu_ticks") is not None and r["cpu_ticks"] < 100:
                warnings.append(f"{n} rep {r['rep']}: only {r['cpu_ticks']} CPU ticks measured;"
                                " use more queries/seconds for precision")
    if warnings:
        lines.append("")
        lines.extend("warning: " + w for w in warnings)

    print("\n".join(lines), flush=True)
    return {"medians": med, "ratios": ratios, "verdicts": verdicts, "warnings": warnings,
            "table": "\n".join(lines)}


# --------------------------------------------------------------------------


def build_floor(path: Path) -> None:
    src = BENCH_DIR / "floor.c"
    if path.exists() and path.stat().st_mtime >= src.stat().st_mtime:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-std=c17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
                    "-o", str(path), str(src)], check=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ncpu = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000, help="ip4set entries")
    p.add_argument("--queries", type=int, default=500_000, help="queries in the dnsperf file")
    p.add_argument("--seed", type=int, default=20240601, help="data generation seed")
    p.add_argument("-r", "--reps", type=int, default=3, help="repetitions (median reported)")
    p.add_argument("-l", "--seconds", type=float, default=10.0,
                   help="dnsperf run length (dnsperf -l)")
    p.add_argument("-n", "--passes", type=int, default=0,
                   help="fixed-count mode: run through the query file N times (dnsperf -n) "
                        "instead of for --seconds")
    p.add_argument("-Q", "--rate", type=int, default=80_000,
                   help="offered load, queries/s (dnsperf -Q); 0 = unlimited")
    p.add_argument("-c", "--clients", type=int, default=4, help="dnsperf -c")
    p.add_argument("-T", "--dnsperf-threads", type=int, default=1, help="dnsperf -T")
    p.add_argument("-q", "--outstanding", type=int, default=200, help="dnsperf -q")
    p.add_argument("--timeout", type=float, default=2.0, help="dnsperf -t (s)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="unmeasured dnsperf warm-up run before each measurement (s); 0 = none")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--rbldnsd", default=shutil.which("rbldnsd") or "/usr/sbin/rbldnsd")
    p.add_argument("--mailrep", default=str(REPO_DIR / "build" / "mailrep"))
    p.add_argument("--floor", type=Path, default=OUT_DIR / "floor")
    p.add_argument("--dnsperf", default=shutil.which("dnsperf") or "dnsperf")
    p.add_argument("--mailrep-coalesce", type=int, default=None,
                   help="pass --coalesce USEC to mailrep (default: its own default)")
    p.add_argument("--mailrep-threads", type=int, default=0,
                   help="pass --threads N to mailrep (0 = its default, one per core)")
    p.add_argument("--floor-threads", type=int, default=ncpu, help="floor worker threads")
    p.add_argument("--user", default="", help="pass -u USER to rbldnsd and mailrep")
    p.add_argument("--retries", type=int, default=2,
                   help="re-run a measurement this often if the server dies during it")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="before each measured run, wait up to this many seconds for the "
                        "machine to be idle; 0 = don't wait")
    p.add_argument("--quiet-threshold", type=float, default=0.15,
                   help="'idle' means other processes use fewer than this many cores")
    p.add_argument("--ready-timeout", type=float, default=120.0,
                   help="max seconds for a server to load and answer")
    p.add_argument("--mem-cap-mb", type=int, default=8192,
                   help="RLIMIT_AS for the servers (MiB); 0 = none")
    p.add_argument("--cpu-cap-s", type=int, default=1800,
                   help="RLIMIT_CPU for the servers (s); 0 = none")
    p.add_argument("--workdir", type=Path, default=None,
                   help="directory for generated data (default: a fresh world-readable temp dir)")
    p.add_argument("--keep-data", action="store_true", help="do not delete generated data")
    p.add_argument("--json", type=Path, default=OUT_DIR / "dnsbl.json")
    a = p.parse_args(argv)
    if a.passes < 0 or a.reps < 1 or a.entries < 1 or a.queries < 2:
        p.error("invalid --passes/--reps/--entries/--queries")
    a.server_list = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in a.server_list:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    return a


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(stop_all)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    logdir = OUT_DIR / "logs"
    logdir.mkdir(parents=True, exist_ok=True)

    names = []
    for n in args.server_list:
        if n == "mailrep" and not os.access(args.mailrep, os.X_OK):
            log(f"note: {args.mailrep} not found; skipping mailrep")
            continue
        if n == "rbldnsd" and not os.access(args.rbldnsd, os.X_OK):
            log(f"note: {args.rbldnsd} not found; skipping rbldnsd")
            continue
        if n == "floor":
            build_floor(args.floor)
        names.append(n)
    if not names:
        log("no servers to run")
        return 2

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="dnsbl-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # servers drop privileges to an unprivileged user
    results: dict[str, list[dict]] = {n: [] for n in names}
    try:
        log(f"generating {args.entries} entries, {args.queries} queries in {workdir} ...")
        gen = generate_data(workdir, args.entries, args.queries, args.seed)
        log(f"  done in {gen['gen_seconds']:.1f}s ({gen['data_bytes'] / 1e6:.1f} MB data file)")
        mode = (f"{args.passes} pass(es) over {gen['n_queries']} queries" if args.passes
                else f"{args.seconds:g}s")
        log(f"dnsperf: {mode}, -c {args.clients} -T {args.dnsperf_threads} "
            f"-q {args.outstanding} -Q {args.rate or 'unlimited'}; {args.reps} rep(s); "
            f"CLK_TCK={CLK_TCK}")

        servers = {n: Server(n, args, logdir) for n in names}
        for rep in range(args.reps):
            k = rep % len(names)
            order = names[k:] + names[:k]  # rotate so no server always goes first
            for n in order:
                log(f"rep {rep + 1}/{args.reps}: {n} ...")
                for attempt in range(args.retries + 1):
                    try:
                        r = measure(servers[n], gen, rep, args)
                        break
                    except ServerDied as e:
                        # e.g. killed from outside on a shared machine
                        log(f"  {e}")
                        if attempt == args.retries:
                            raise
                        log(f"  retrying ({attempt + 1}/{args.retries}) ...")
                results[n].append(r)
                log(f"  load {r['load_s']:.3f}s rss {r['rss_kb'] / 1024:.1f}MB "
                    + (f"data {r['data_bytes_per_entry']:.1f}B/entry " if 'data_bytes_per_entry' in r else "")
                    + f"qps {r['qps']:.0f} lost {r['lost']} "
                    f"cpu {r['cpu_ticks']} ticks = {r['cpu_us_per_query']:.3f}us/query")

        print()
        summary = report(results, names, args)
        doc = {
            "benchmark": "dnsbl",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                     "python": platform.python_version(), "clk_tck": CLK_TCK,
                     "loadavg": os.getloadavg()},
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "dataset": {k: gen[k] for k in ("entries", "n_queries", "n_queries_listed",
                                             "data_bytes", "gen_seconds")},
            "servers": names,
            "medians": summary["medians"],
            "ratios": summary["ratios"],
            "targets": {key: {"label": label, "limit": limit,
                              "ratio": summary["ratios"][key],
                              "verdict": summary["verdicts"][key]}
                        for key, label, limit in TARGETS},
            "warnings": summary["warnings"],
            "table": summary["table"],
            "runs": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        log(f"\nwrote {args.json}")
        return 0
    finally:
        stop_all()
        if own_workdir and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        elif own_workdir:
            log(f"data kept in {workdir}")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
