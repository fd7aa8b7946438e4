#!/usr/bin/python3
"""Listing store benchmark: durable bulk impact ingest, the refresh that turns
impacts into listings, and the export of every listing in each format.

    /usr/bin/python3 bench/listing_bench.py [--impacts N] [--bin build/mailrep]

Data: N (default 1,000,000) impacts from N distinct random public IPv4
addresses, all inside the last 7 days, so the refresh produces N Level 1
listings (plus the few /24s that collect 4 impacts). Each step runs the real
binary with MAILREP_NOW fixed:

* ingest: `mailrep impact import --no-refresh` (WAL, synchronous=FULL, one
  transaction per --batch impacts, so every batch is durable on return). The
  peer in the same run is Python's sqlite3 module inserting the same rows into
  a table of the same shape with the same settings and batches.
* refresh: `mailrep stats`, which recomputes the listings from the impacts.
* export: `mailrep export --format F` for rbldnsd, txt, xml and bind; the time
  is the export's own (from its report), the file fsync'd and renamed.
* trap: `mailrep trap` on loopback receiving --trap-messages messages from
  Postfix's smtp-source over 10 sessions; each message is one impact
  committed (fsync'd) before its 250 reply.

Figures go to stdout and bench/out/listing.json.
"""
import argparse
import datetime
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NOW = "2026-06-01T00:00:00Z"
NOW_T = int(datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc).timestamp())


def public_ips(n, rng):
    seen = set()
    firsts = [f for f in range(1, 224) if f not in (10, 100, 127, 169, 172, 192, 198, 203)]
    while len(seen) < n:
        seen.add((rng.choice(firsts) << 24) | rng.getrandbits(24))
    return list(seen)


def dotted(a):
    return "%d.%d.%d.%d" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)


def run(binary, args, env):
    t = time.perf_counter()
    p = subprocess.run([binary] + args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (" ".join(args), p.stderr))
    return wall, p.stderr


def peer_ingest(path, rows, batch):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA cache_size=-131072")  # as the store sets it
    db.executescript(
        "CREATE TABLE impacts(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, ip BLOB NOT NULL,"
        " trap TEXT, source TEXT, helo TEXT, mail_from TEXT, rcpt TEXT, message_id TEXT,"
        " subject TEXT, headers BLOB);"
        "CREATE INDEX impacts_time ON impacts(time);"
        "CREATE INDEX impacts_ip ON impacts(ip, time);")
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        db.execute("BEGIN")
        db.executemany("INSERT INTO impacts(time, ip, trap) VALUES(?,?,?)", rows[i:i + batch])
        db.execute("COMMIT")
    return time.perf_counter() - t


def bench_trap(binary, work, n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    db = os.path.join(work, "trap.db")
    srv = subprocess.Popen([binary, "trap", "--db", db, "--listen", "127.0.0.1:%d" % port,
                            "--trap-domain", "trap.example"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        t = time.perf_counter()
        subprocess.run(["smtp-source", "-c", "-m", str(n), "-s", "10", "-l", "2000", "-t",
                        "x@trap.example", "-f", "s@spam.example", "127.0.0.1:%d" % port],
                       check=True, capture_output=True)
        secs = time.perf_counter() - t
    finally:
        srv.terminate()
        srv.wait()
    got = sqlite3.connect(db).execute("SELECT count(*) FROM impacts").fetchone()[0]
    assert got == n, (got, n)
    return {"trap_messages": n, "trap_s": secs, "trap_per_s": n / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impacts", type=int, default=1000000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailrep"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=50000)
    ap.add_argument("--trap-messages", type=int, default=5000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix="listing-bench-", dir=os.environ.get("TMPDIR"))
    env = dict(os.environ, MAILREP_NOW=NOW)
    ips = public_ips(a.impacts, rng)
    times = [NOW_T - rng.randrange(6 * 86400) for _ in ips]
    imp = os.path.join(work, "impacts.tsv")
    with open(imp, "w") as f:
        for ip, t in zip(ips, times):
            f.write("@%d\t%s\ttrap@bench.example\n" % (t, dotted(ip)))
    db = os.path.join(work, "store.db")
    res = {"impacts": a.impacts, "batch": a.batch}

    wall, err = run(a.bin, ["impact", "import", "--db", db, imp, "--no-refresh",
                               "--batch", str(a.batch)], env)
    m = re.search(r"imported (\d+) impacts .* in ([\d.]+) s", err)
    assert m and int(m.group(1)) == a.impacts, err
    res["ingest_s"] = float(m.group(2))
    res["ingest_per_s"] = a.impacts / res["ingest_s"]
    res["ingest_wall_s"] = wall
    rows = [(t, ip.to_bytes(4, "big"), "trap@bench.example") for ip, t in zip(ips, times)]
    res["peer_ingest_s"] = peer_ingest(os.path.join(work, "peer.db"), rows, a.batch)
    res["peer_ingest_per_s"] = a.impacts / res["peer_ingest_s"]

    wall, _ = run(a.bin, ["stats", "--db", db, "--json"], env)
    res["refresh_s"] = wall
    for fmt in ["rbldnsd", "txt", "xml", "bind"]:
        out = os.path.join(work, "export." + fmt)
        wall, err = run(a.bin, ["export", "--db", db, "--format", fmt, "--out", out], env)
        m = re.search(r"exported (\d+) entries .* export ([\d.]+) s", err)
        assert m, err
        res["export_%s_s" % fmt] = float(m.group(2))
        res["export_%s_wall_s" % fmt] = wall
        res["export_%s_entries" % fmt] = int(m.group(1))
        res["export_%s_bytes" % fmt] = os.path.getsize(out)

    res.update(bench_trap(a.bin, work, a.trap_messages))

    print("listing benchmark, %d impacts from distinct IPs (%s)" % (a.impacts, a.bin))
    print("  ingest (durable, batches of %d): %.2f s = %.0f impacts/s; "
          "python sqlite3 peer %.2f s = %.0f/s; ratio %.2fx"
          % (a.batch, res["ingest_s"], res["ingest_per_s"], res["peer_ingest_s"], res["peer_ingest_per_s"],
             res["ingest_per_s"] / res["peer_ingest_per_s"]))
    print("  refresh to listings: %.2f s (process wall time)" % res["refresh_s"])
    for fmt in ["rbldnsd", "txt", "xml", "bind"]:
        print("  export %-8s %8d entries %11d bytes  %.3f s (process %.2f s)" % (
            fmt, res["export_%s_entries" % fmt], res["export_%s_bytes" % fmt],
            res["export_%s_s" % fmt], res["export_%s_wall_s" % fmt]))
    print("  trap: %d messages over 10 SMTP sessions in %.2f s = %.0f durable impacts/s"
          % (a.trap_messages, res["trap_s"], res["trap_per_s"]))
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "listing.json"), "w") as f:
        json.dump(res, f, indent=2)
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
