"""System tests of `mailrep trap`, the SMTP trap receiver, on loopback: real
clients (swaks, Postfix's smtp-source) and raw sockets for the protocol's
edges (pipelining, bad commands, over-long lines, size caps, timeouts,
PROXY v1/v2 from trusted and untrusted peers)."""
import json
import os
import socket
import sqlite3
import struct
import subprocess
import time

import pytest

from conftest import MAILREP, Server, free_port
from listing_helpers import run

TRAP = "trap.example"


def start_trap(tmp_path, *extra, proxy=True):
    """A trap server; 127.0.0.1 is a trusted proxy unless proxy=False (other
    loopback sources, 127.0.0.2 and up, are ordinary clients)."""
    db = str(tmp_path / "trap.db")
    port = free_port()
    argv = [MAILREP, "trap", "--db", db, "--listen", "127.0.0.1:%d" % port, "--trap-domain", TRAP,
            "--trap-address", "unsub-probe-1@lists.example", "--hostname", "trap.test"] + list(extra)
    if proxy:
        argv += ["--proxy-from", "127.0.0.1/32"]
    srv = Server(argv, port, str(tmp_path / "trap.log"))
    deadline = time.time() + 20
    while True:
        if srv.proc.poll() is not None:
            raise RuntimeError("trap exited:\n" + srv.output())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.time() > deadline:
                srv.stop()
                raise
            time.sleep(0.05)
    srv.db = db
    return srv


@pytest.fixture
def trap(tmp_path):
    started = []

    def start(*extra, proxy=True):
        s = start_trap(tmp_path, *extra, proxy=proxy)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()
        # a clean exit on SIGTERM: under ASan this also proves no leak or bad access
        out = s.output()
        assert s.proc.returncode == 0, out
        assert "Sanitizer" not in out and "runtime error" not in out, out


def impacts(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT ip, trap, helo, mail_from, rcpt, subject, message_id, source"
                         " FROM impacts ORDER BY id").fetchall()


class Client:
    def __init__(self, port, source="127.0.0.1", greet=True):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.bind((source, 0))
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
        if greet:
            assert self.reply()[0] == 220

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("closed; got %r" % lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def closed(self):
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True


def test_swaks_delivery_through_proxy_v1_and_v2_is_an_impact(trap):
    srv = trap()
    for version, family, src in (("1", "TCP4", "11.12.13.14"), ("2", "AF_INET", "11.12.13.15")):
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--to", "abuse@" + TRAP,
                            "--from", "bulk@spam.example", "--helo", "mx.spam.example",
                            "--header", "Subject: Cheap stuff", "--proxy-version", version,
                            "--proxy-family", family, "--proxy-source", src,
                            "--proxy-source-port", "40000", "--proxy-dest", "127.0.0.1",
                            "--proxy-dest-port", str(srv.port)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "250 2.0.0 Ok: recorded as" in p.stdout
        # durable and visible to another process as soon as the reply came
        j = json.loads(run(["lookup", "--db", srv.db, src, "--json"])[1])
        assert j["listed"] and j["levels"][0]["level"] == 1
        imp = j["impacts"][0]
        assert imp["trap"] == "abuse@" + TRAP and imp["helo"] == "mx.spam.example"
        assert imp["mail_from"] == "bulk@spam.example" and imp["subject"] == "Cheap stuff"
        assert imp["source"] == "smtp" and imp["message_id"] and imp["headers_bytes"] > 0


def test_smtp_source_sessions(trap):
    srv = trap(proxy=False)
    p = subprocess.run(["smtp-source", "-c", "-m", "30", "-s", "5", "-t", "x@" + TRAP, "-f",
                        "s@spam.example", "127.0.0.1:%d" % srv.port], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = impacts(srv.db)
    assert len(rows) == 30
    assert all(r[1] == "x@" + TRAP and r[3] == "s@spam.example" for r in rows)


def test_pipelining_rejections_and_trap_addresses(trap):
    srv = trap()
    c = Client(srv.port, source="127.0.0.2")  # not a trusted proxy: greeted at once
    c.send("EHLO pipeliner.example\r\nMAIL FROM:<a@spam.example> SIZE=500\r\n"
           "RCPT TO:<someone@elsewhere.example>\r\nRCPT TO:<unsub-probe-1@lists.example>\r\n"
           "RCPT TO:<Other@Trap.Example>\r\nDATA\r\n")
    code, lines = c.reply()
    assert code == 250 and "PIPELINING" in " ".join(lines)
    assert [c.reply()[0] for _ in range(5)] == [250, 550, 250, 250, 354]
    c.send("Subject: pipelined\r\nMessage-ID: <p1@spam.example>\r\n\r\n..dot-stuffed\r\n.\r\n"
           "MAIL FROM:<b@spam.example>\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 250, 250, 221]
    rows = impacts(srv.db)
    assert rows == [(socket.inet_aton("127.0.0.2"), "unsub-probe-1@lists.example", "pipeliner.example",
                     "a@spam.example", "unsub-probe-1@lists.example,Other@Trap.Example", "pipelined",
                     "<p1@spam.example>", "smtp")]


def test_untrusted_proxy_header_is_a_bad_command(trap):
    srv = trap()
    c = Client(srv.port, source="127.0.0.3")
    c.send("PROXY TCP4 11.1.1.1 127.0.0.1 1 25\r\n")
    assert c.reply()[0] == 500


def test_trusted_peer_must_send_proxy_and_v2_ipv6(trap):
    srv = trap()
    c = Client(srv.port, greet=False)
    src = socket.inet_pton(socket.AF_INET6, "2a01:4f8::9")
    body = src + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!HH", 5555, 25)
    hdr = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body
    c.send(hdr + b"EHLO v6.example\r\n")  # the header and the first command in one segment
    assert c.reply()[0] == 220
    assert c.reply()[0] == 250
    c.send("MAIL FROM:<>\r\nRCPT TO:<t@%s>\r\nDATA\r\nSubject: v6\r\n\r\nhi\r\n.\r\n" % TRAP)
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 354, 250]
    j = json.loads(run(["lookup", "--db", srv.db, "2a01:4f8::9", "--json"])[1])
    assert j["listed"] and j["impacts"][0]["subject"] == "v6"
    # garbage instead of a PROXY header from a trusted peer: dropped without a word
    d = Client(srv.port, greet=False)
    d.send("EHLO sneaky.example\r\n")
    assert d.closed()


def test_bad_commands_and_sequence_errors_close_after_ten(trap):
    srv = trap()
    c = Client(srv.port, source="127.0.0.2")
    c.send("MAIL FROM:<a@b>\r\n")
    assert c.reply()[0] == 503
    c.send("EHLO x\r\n")
    c.reply()
    c.send("RCPT TO:<t@%s>\r\n" % TRAP)
    assert c.reply()[0] == 503
    c.send("DATA\r\n")
    assert c.reply()[0] == 503
    codes = []
    for i in range(7):
        c.send("BOGUS %d\r\n" % i)
        codes.append(c.reply()[0])
    assert codes == [500] * 6 + [421]
    assert c.closed()


def test_overlong_command_line_is_refused_and_closed(trap):
    srv = trap()
    c = Client(srv.port, source="127.0.0.2")
    c.send("EHLO " + "x" * 3000 + "\r\n")
    code, lines = c.reply()
    assert code == 500 and "too long" in lines[0]
    assert c.closed()


def test_size_cap(trap):
    srv = trap("--max-size", "2000")
    c = Client(srv.port, source="127.0.0.2")
    c.send("EHLO x\r\n")
    assert "SIZE 2000" in " ".join(c.reply()[1])
    c.send("MAIL FROM:<a@b> SIZE=5000\r\n")
    assert c.reply()[0] == 552
    c.send("MAIL FROM:<a@b>\r\nRCPT TO:<t@%s>\r\nDATA\r\n" % TRAP)
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send("Subject: big\r\n\r\n" + ("y" * 70 + "\r\n") * 100 + ".\r\n")
    assert c.reply()[0] == 552
    # an over-long data line is refused too, and the session goes on
    c.send("MAIL FROM:<a@b>\r\nRCPT TO:<t@%s>\r\nDATA\r\n" % TRAP)
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send("Subject: long\r\n\r\n" + "z" * 1500 + "\r\n.\r\n")
    assert c.reply()[0] in (500, 552)
    c.send("QUIT\r\n")
    assert c.reply()[0] == 221
    assert impacts(srv.db) == []


def test_silent_client_times_out(trap):
    srv = trap("--timeout", "1s")
    c = Client(srv.port, source="127.0.0.2")
    t = time.time()
    code, _ = c.reply()
    assert code == 421 and time.time() - t < 5
    assert c.closed()


def test_connection_limit(trap):
    srv = trap("--max-conns", "2")
    a = Client(srv.port, source="127.0.0.2")
    b = Client(srv.port, source="127.0.0.2")
    c = Client(srv.port, source="127.0.0.2", greet=False)
    assert c.reply()[0] == 421
    a.send("QUIT\r\n")
    assert a.reply()[0] == 221
    b.send("NOOP\r\n")
    assert b.reply()[0] == 250


def test_needs_a_trap(tmp_path):
    rc, _, err = run(["trap", "--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:1"], check=False)
    assert rc == 2 and "no trap" in err
    assert run(["trap", "--help"])[0] == 0


def test_trap_gives_up_root_after_binding(trap):
    """--user: the trap binds and opens its store as root, then runs as
    nobody; a hit is still recorded durably before the 250."""
    import pwd
    assert os.geteuid() == 0, "this test needs root, as the privilege drop does"
    nobody = pwd.getpwnam("nobody").pw_uid
    srv = trap("--user", "nobody")
    with open("/proc/%d/status" % srv.proc.pid) as f:
        uid = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    assert uid == [str(nobody)] * 4, uid
    assert "trap: running as nobody" in srv.output()
    p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--to", "abuse@" + TRAP,
                        "--from", "bulk@spam.example", "--helo", "mx.spam.example",
                        "--proxy-version", "1", "--proxy-family", "TCP4",
                        "--proxy-source", "11.12.13.99", "--proxy-source-port", "40000",
                        "--proxy-dest", "127.0.0.1", "--proxy-dest-port", str(srv.port)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "250 2.0.0 Ok: recorded as" in p.stdout, p.stdout + p.stderr
    j = json.loads(run(["lookup", "--db", srv.db, "11.12.13.99", "--json"])[1])
    assert j["listed"], j


def test_trap_without_user_gives_up_root_too(trap):
    import pwd
    try:
        default = pwd.getpwnam("mailrep")
    except KeyError:
        default = pwd.getpwnam("nobody")
    srv = trap()
    with open("/proc/%d/status" % srv.proc.pid) as f:
        uid = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    assert uid == [str(default.pw_uid)] * 4, uid


def test_trap_refuses_root_as_its_user(tmp_path):
    with pytest.raises(RuntimeError) as e:
        start_trap(tmp_path, "--user", "root")
    assert "refusing to run as root" in str(e.value)
