#!/usr/bin/python3
"""Live zones: memory per listing and the delay from impact to DNS answer.

Builds a listing store of N Level-1 listings (random public IPv4 addresses,
one impact each), exports it in rbldnsd format, and in the same run starts:

  * mailrep dnsbl serving the store live (ZONE:store:DB),
  * mailrep dnsbl serving the rbldnsd export as an ip4set,
  * rbldnsd serving the same export,

each once with the data and once with an empty store/file, so that the data
bytes per entry are (anonymous RSS full - anonymous RSS empty) / N: code pages
of libraries (SQLite's, which the live store touches more of when it has
rows) are left out of the per-entry figure, and stay in the total RSS shown. Then it records M new impacts
one at a time with `mailrep impact add` and measures, for each, the time
until the live zone answers it (polled every 10 ms).

    make build && /usr/bin/python3 bench/live_bench.py [--entries N] [--impacts M]

Only 127.0.0.1 is used. Servers run as user nobody, so the work directory is
world-writable. Prints a table and the ratios.
"""
import argparse
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILREP = os.path.join(ROOT, "build", "mailrep")
ZONE = "bl.example"
NOW = "2026-03-02T12:00:00Z"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def query_a(port, ip, timeout=0.5):
    name = ".".join(reversed(ip.split("."))) + "." + ZONE
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    return struct.unpack("!H", r[6:8])[0]  # answer count


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start(argv, port, probe_ip, env):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if p.poll() is not None:
            raise RuntimeError("%s exited %s" % (argv[0], p.returncode))
        if query_a(port, probe_ip, 0.2):
            return p, time.monotonic() - t0
        time.sleep(0.01)
    p.kill()
    raise RuntimeError("%s did not answer" % " ".join(argv))


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def random_ips(rng, n):
    seen = set()
    while len(seen) < n:
        a = rng.randrange(11, 100)  # public, not reserved
        seen.add("%d.%d.%d.%d" % (a, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)))
    return sorted(seen)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200000)
    ap.add_argument("--impacts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if not os.path.exists(MAILREP):
        sys.exit("build/mailrep is missing: run make build")
    rbldnsd = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"
    rng = random.Random(a.seed)
    d = tempfile.mkdtemp(prefix="live-bench-")
    os.chmod(d, 0o777)
    env = dict(os.environ, MAILREP_NOW=NOW)
    try:
        ips = random_ips(rng, a.entries + a.impacts)
        base, extra = ips[: a.entries], ips[a.entries:]
        imp = os.path.join(d, "impacts.tsv")
        with open(imp, "w") as f:
            for ip in base:
                f.write("-\t%s\n" % ip)
        db, empty_db = os.path.join(d, "bl.db"), os.path.join(d, "empty.db")
        t0 = time.monotonic()
        subprocess.run([MAILREP, "impact", "import", "--db", db, imp], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        t_import = time.monotonic() - t0
        subprocess.run([MAILREP, "impact", "add", "--db", empty_db, "192.0.2.1"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # reserved: never listed, so the store stays empty
        exp, empty_exp = os.path.join(d, "bl.ip4set"), os.path.join(d, "empty.ip4set")
        subprocess.run([MAILREP, "export", "--db", db, "--format", "rbldnsd", "--out", exp], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([MAILREP, "export", "--db", empty_db, "--format", "rbldnsd", "--out", empty_exp],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        for p in os.listdir(d):
            os.chmod(os.path.join(d, p), 0o666)

        rows = []
        probe = base[len(base) // 2]
        for name, full, empty in (
                ("mailrep live store", [MAILREP, "dnsbl", "-n", "-u", "nobody", "%s:store:%s" % (ZONE, db)],
                 [MAILREP, "dnsbl", "-n", "-u", "nobody", "%s:store:%s" % (ZONE, empty_db)]),
                ("mailrep ip4set", [MAILREP, "dnsbl", "-n", "-u", "nobody", "%s:ip4set:%s" % (ZONE, exp)],
                 [MAILREP, "dnsbl", "-n", "-u", "nobody", "%s:ip4set:%s" % (ZONE, empty_exp)]),
                ("rbldnsd ip4set", [rbldnsd, "-n", "-u", "nobody", "%s:ip4set:%s" % (ZONE, exp)],
                 [rbldnsd, "-n", "-u", "nobody", "%s:ip4set:%s" % (ZONE, empty_exp)])):
            port = free_port()
            pe, _ = start(empty[:2 if empty[0] == rbldnsd else 3] + ["-b", "127.0.0.1/%d" % port] +
                          empty[2 if empty[0] == rbldnsd else 3:], port, "127.0.0.2", env)
            # data is anonymous memory: library code paged in (SQLite's, for the
            # live store) is not counted per entry, though it is in total RSS
            a_empty = rss_kb(pe.pid, "RssAnon")
            stop(pe)
            port = free_port()
            pf, t_load = start(full[:2 if full[0] == rbldnsd else 3] + ["-b", "127.0.0.1/%d" % port] +
                               full[2 if full[0] == rbldnsd else 3:], port, probe, env)
            r_full = rss_kb(pf.pid)
            a_full = rss_kb(pf.pid, "RssAnon")
            delays = []
            if name == "mailrep live store":
                for ip in extra:
                    t0 = time.monotonic()
                    subprocess.run([MAILREP, "impact", "add", "--db", db, ip], env=env, check=True,
                                   stdout=subprocess.DEVNULL)
                    while not query_a(port, ip) and time.monotonic() - t0 < 10:
                        time.sleep(0.01)
                    delays.append(time.monotonic() - t0)
            stop(pf)
            rows.append((name, t_load, r_full / 1024.0, (a_full - a_empty) * 1024.0 / a.entries, delays))

        print("%d listings (import %.1f s)" % (a.entries, t_import))
        print("%-20s %8s %8s %14s" % ("server", "load s", "RSS MB", "data B/entry"))
        for name, t, rss, per, _ in rows:
            print("%-20s %8.2f %8.1f %14.1f" % (name, t, rss, per))
        live, ip4, rbl = rows
        print("live store / mailrep ip4set data bytes per entry: %.2f" % (live[3] / ip4[3]))
        print("live store / rbldnsd ip4set data bytes per entry: %.2f" % (live[3] / rbl[3]))
        ds = live[4]
        if ds:
            print("impact -> answer over %d impacts: median %.3f s, max %.3f s (target <= 1 s)" %
                  (len(ds), statistics.median(ds), max(ds)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
