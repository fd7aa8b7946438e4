"""Helpers for the relay system tests: start `mailrep relay` and Postfix's
smtp-sink on loopback ports, submit mail with smtplib, read the sink's dump
files and the relay's accounting log, and wait for conditions."""
import json
import os
import smtplib
import socket
import threading
import time

from conftest import MAILREP, Server, free_port

SMTP_SINK = "/usr/sbin/smtp-sink"


def wait_port(port, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d" % port)


def start_sink(tmpdir, extra=(), port=None):
    """smtp-sink dumping every transaction to its own file in .dumpdir."""
    port = port or free_port()
    dumpdir = os.path.join(tmpdir, "sink-%d" % port)
    os.makedirs(dumpdir, exist_ok=True)
    os.chmod(dumpdir, 0o777)
    argv = [SMTP_SINK, "-u", "nobody", "-d", dumpdir + "/m."] + list(extra) + [
        "127.0.0.1:%d" % port, "64"]
    srv = Server(argv, port, os.path.join(tmpdir, "sink-%d.log" % port))
    wait_port(port, srv.proc)
    srv.dumpdir = dumpdir
    srv.hop = "127.0.0.1:%d" % port
    return srv


def start_relay(tmpdir, args, spool=None, port=None, preexec_fn=None, name="relay"):
    port = port or free_port()
    spool = spool or os.path.join(tmpdir, "spool")
    log = os.path.join(tmpdir, "accounting.log")
    argv = [MAILREP, "relay", "--listen", "127.0.0.1:%d" % port, "--spool", spool,
            "--log", log, "--hostname", "relay.test"] + list(args)
    srv = Server.__new__(Server)
    srv.argv, srv.port = argv, port
    srv.logpath = os.path.join(tmpdir, "%s-%d-%d.log" % (name, port, int(time.time() * 1000)))
    srv.log = open(srv.logpath, "wb")
    import subprocess
    # every relay of the tests checks its queue counters against the queue
    # at each scheduler tick (and aborts if they differ), and makes every
    # summary both ways, refusing to answer when they differ
    env = dict(os.environ, MAILREP_QUEUE_VERIFY="1")
    srv.proc = subprocess.Popen(argv, stdout=srv.log, stderr=subprocess.STDOUT,
                                preexec_fn=preexec_fn, env=env)
    try:
        wait_port(port, srv.proc)
    except Exception:
        srv.stop()
        raise RuntimeError("relay failed to start:\n" + srv.output())
    srv.spool, srv.acct = spool, log
    return srv


MESSAGE = ("From: Alice <alice@example.com>\r\n"
           "To: bob@dest.example\r\n"
           "Subject: %s\r\n"
           "Message-ID: <%s@example.com>\r\n"
           "\r\n"
           "Hello Bob,\r\n.a line starting with a dot\r\nbye\r\n")


def message(tag="hello"):
    return MESSAGE % (tag, tag)


def submit(port, sender, rcpts, data=None, conn=None):
    """Sends one message; returns the queue id from the 250 reply."""
    s = conn or smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        if conn is None:
            s.ehlo("client.test")
        code, _ = s.mail(sender)
        assert code == 250
        for r in rcpts:
            code, msg = s.rcpt(r)
            assert code == 250, (r, code, msg)
        code, msg = s.data((data or message()).encode())
        assert code == 250, (code, msg)
        return msg.decode().split("queued as ")[1].strip()
    finally:
        if conn is None:
            s.quit()


def sink_files(sink):
    out = []
    for name in sorted(os.listdir(sink.dumpdir)):
        with open(os.path.join(sink.dumpdir, name), "rb") as f:
            out.append(f.read())
    return out


def events(relay):
    if not os.path.exists(relay.acct):
        return []
    with open(relay.acct) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def wait_for(pred, timeout=20.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def stop_clean(relay):
    """Stops the relay with SIGTERM; it must exit 0 with no sanitizer report."""
    relay.stop()
    out = relay.output()
    assert relay.proc.returncode == 0, out
    assert "Sanitizer" not in out and "runtime error" not in out, out


class CountingSink:
    """A minimal SMTP receiver counting simultaneous connections."""

    def __init__(self, delay=0.15, esmtp=True, rcpt_reply=None, rcpt_reply_for=None):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.delay, self.esmtp, self.lock = delay, esmtp, threading.Lock()
        self.commands = []
        self.per_conn = []  # messages carried by each finished connection
        self.pipelined = 0  # MAIL commands that arrived with their RCPT already behind them
        self.rcpt_reply = rcpt_reply  # e.g. b"421 ..." answers every RCPT, then closes
        self.rcpt_reply_for = rcpt_reply_for  # f(RCPT line) -> a reply, or None for 250
        self.current = self.max = self.connections = self.messages = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    def session(self, c):
        with self.lock:
            self.current += 1
            self.connections += 1
            self.max = max(self.max, self.current)
        pending = [b""]  # bytes received and not yet read as lines

        def lines():
            while True:
                while b"\n" not in pending[0]:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    pending[0] += chunk
                line, pending[0] = pending[0].split(b"\n", 1)
                yield line + b"\n"

        carried = 0
        try:
            c.sendall(b"220 counting ESMTP\r\n")
            data = False
            for line in lines():
                if data:
                    if line == b".\r\n":
                        data = False
                        time.sleep(self.delay)
                        carried += 1
                        with self.lock:
                            self.messages += 1
                        c.sendall(b"250 2.0.0 ok\r\n")
                    continue
                verb = line[:4].upper()
                with self.lock:
                    self.commands.append(line.rstrip(b"\r\n"))
                    if verb == b"MAIL" and pending[0][:4].upper() == b"RCPT":
                        self.pipelined += 1
                if verb == b"EHLO" and not self.esmtp:
                    c.sendall(b"502 5.5.1 no ESMTP here\r\n")
                elif verb == b"EHLO":
                    c.sendall(b"250-counting\r\n250 PIPELINING\r\n")
                elif verb == b"RCPT" and (self.rcpt_reply or self.rcpt_reply_for):
                    reply = self.rcpt_reply_for(line) if self.rcpt_reply_for else \
                        self.rcpt_reply
                    c.sendall((reply or b"250 ok") + b"\r\n")
                    if reply and reply.startswith(b"421"):
                        break
                elif verb == b"DATA":
                    data = True
                    c.sendall(b"354 go\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    break
                else:
                    c.sendall(b"250 ok\r\n")
        finally:
            c.close()
            with self.lock:
                self.current -= 1
                self.per_conn.append(carried)

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()
