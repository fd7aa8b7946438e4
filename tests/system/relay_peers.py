"""Peers for the relay's pool, shaping and MX-failover tests: smtp-sink on
any loopback address (127.0.0.2, ::1...), and a counting sink that also
records, per connection, the peer address and the EHLO name, and the time
of every connection and message."""
import os
import socket
import time

from conftest import Server
from relay_util import SMTP_SINK, CountingSink


def wait_addr(host, port, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s port %d" % (host, port))


def start_sink_at(tmpdir, host, port, extra=()):
    """smtp-sink on host:port (host may be an IPv6 address), one dump file
    per transaction in .dumpdir."""
    tag = "%s-%d" % (host.replace(":", "_"), port)
    dumpdir = os.path.join(tmpdir, "sink-" + tag)
    os.makedirs(dumpdir, exist_ok=True)
    os.chmod(dumpdir, 0o777)
    listen = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    argv = [SMTP_SINK, "-u", "nobody", "-d", dumpdir + "/m."] + list(extra) + [listen, "64"]
    srv = Server(argv, port, os.path.join(tmpdir, "sink-%s.log" % tag))
    wait_addr(host, port, srv.proc)
    srv.dumpdir = dumpdir
    return srv


def dump_headers(srv, name):
    """The values of header `name` (e.g. b"X-Client-Addr") over every dump."""
    out = []
    for f in sorted(os.listdir(srv.dumpdir)):
        with open(os.path.join(srv.dumpdir, f), "rb") as fh:
            for line in fh.read().split(b"\n"):
                if line.startswith(name + b": "):
                    out.append(line[len(name) + 2:].strip().decode())
    return out


class PeerSink(CountingSink):
    """CountingSink that also keeps, per peer address, the connections now
    open and their maximum, each connection's EHLO name, and the times of
    connections and messages."""

    def __init__(self, **kw):
        self.peer_now, self.peer_max, self.peer_conns = {}, {}, {}
        self.conn_times, self.helos = [], []
        super().__init__(**kw)

    def session(self, c):
        peer = c.getpeername()[0]
        with self.lock:
            self.conn_times.append(time.monotonic())
            self.peer_now[peer] = self.peer_now.get(peer, 0) + 1
            self.peer_max[peer] = max(self.peer_max.get(peer, 0), self.peer_now[peer])
            self.peer_conns[peer] = self.peer_conns.get(peer, 0) + 1
        try:
            super().session(c)
        finally:
            with self.lock:
                self.peer_now[peer] -= 1

    def ehlos(self):
        with self.lock:
            return [c.split(b" ", 1)[1].decode() for c in self.commands
                    if c[:5].upper() == b"EHLO "]
