"""Shared fixtures for the system tests.

The tests drive the real binary (MAILREP_BIN, default build/mailrep) on
loopback ports against real peers from Debian packages. Helpers here start
servers on free ports, wait until they answer, and stop them afterwards.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import dns.message
import dns.query
import dns.rcode
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAILREP = os.environ.get("MAILREP_BIN", os.path.join(ROOT, "build", "mailrep"))


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
        return port
    raise RuntimeError("no free port")


def world_readable_dir(prefix):
    """A temporary directory that servers which drop privileges can read."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def wait_dns(port, name="version.bind.", rdtype="TXT", rdclass="CH", host="127.0.0.1",
             timeout=20.0, proc=None):
    """Waits until a DNS server on host:port answers anything over UDP."""
    deadline = time.time() + timeout
    q = dns.message.make_query(name, rdtype, rdclass)
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            dns.query.udp(q, host, port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("DNS server on port %d did not answer" % port)


class Server:
    """A running server process with its captured stderr."""

    def __init__(self, argv, port, logpath, env=None):
        self.argv = argv
        self.port = port
        self.logpath = logpath
        self.log = open(logpath, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_mailrep_dnsbl(args, tmpdir, port=None, wait=True):
    """Starts `mailrep dnsbl -n -b 127.0.0.1/PORT args...` and waits for it."""
    port = port or free_port()
    argv = [MAILREP, "dnsbl", "-n", "-b", "127.0.0.1/%d" % port] + list(args)
    srv = Server(argv, port, os.path.join(tmpdir, "mailrep-%d.log" % port))
    if wait:
        try:
            wait_dns(port, proc=srv.proc)
        except Exception:
            srv.stop()
            raise RuntimeError("mailrep dnsbl failed to start:\n" + srv.output())
    return srv


def start_rbldnsd(args, tmpdir, port=None):
    """Starts Debian's rbldnsd on a loopback port (it drops to user rbldns)."""
    exe = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"
    port = port or free_port()
    argv = [exe, "-n", "-b", "127.0.0.1/%d" % port] + list(args)
    srv = Server(argv, port, os.path.join(tmpdir, "rbldnsd-%d.log" % port))
    try:
        wait_dns(port, proc=srv.proc)
    except Exception:
        srv.stop()
        raise RuntimeError("rbldnsd failed to start:\n" + srv.output())
    return srv


@pytest.fixture
def datadir():
    d = world_readable_dir("mailrep-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def servers():
    """Collects servers started by a test and stops them all at the end."""
    started = []
    yield started
    for s in started:
        s.stop()
