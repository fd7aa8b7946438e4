"""Helpers for the relay's TLS, AUTH and account tests: a self-signed
certificate made with openssl, password hashes from the binary itself, a
config file with [account] sections, swaks runs, and a raw SMTP client
that can switch to TLS on a socket it controls byte by byte."""
import os
import socket
import ssl
import subprocess

from conftest import MAILREP

SWAKS = "/usr/bin/swaks"


def make_cert(tmpdir, name="relay.test", prefix="tls"):
    """A self-signed RSA certificate and key (PEM) for `name`."""
    cert = os.path.join(tmpdir, prefix + "-cert.pem")
    key = os.path.join(tmpdir, prefix + "-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % name],
                   check=True, capture_output=True)
    return cert, key


def hash_password(pw):
    out = subprocess.run([MAILREP, "relay", "--hash-password"], input=pw + "\n",
                         capture_output=True, text=True, check=True)
    h = out.stdout.strip()
    assert h.startswith("$pbkdf2-sha256$"), h
    return h


def write_config(tmpdir, accounts, relay=(), name="relay.ini", pools=()):
    """accounts: {name: {"password": plain, "per-hour": 3, ...}}; the
    password is stored hashed, as an operator would. Every pool the
    accounts or default-pool name, and those in `pools`, is configured
    with the source address 127.0.0.1."""
    lines = ["[relay]"] + ["%s = %s" % kv for kv in relay]
    names = set(pools) | {v for k, v in relay if k == "default-pool"}
    for acct, keys in accounts.items():
        lines.append("")
        lines.append("[account %s]" % acct)
        for k, v in keys.items():
            lines.append("%s = %s" % (k, hash_password(v) if k == "password" else v))
            if k in ("pool", "pools"):
                names |= {p.strip() for p in str(v).split(",")}
    for p in sorted(names):
        lines += ["", "[pool %s]" % p, "source = 127.0.0.1"]
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def swaks(port, *args, rcpt="bob@dest.example", sender="alice@example.com"):
    """Runs swaks against 127.0.0.1:port; returns (exit code, transcript)."""
    argv = [SWAKS, "--server", "127.0.0.1:%d" % port, "--from", sender, "--to", rcpt,
            "--helo", "client.test", "--timeout", "20"] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


class RawSMTP:
    """SMTP over a plain socket, with an explicit switch to TLS."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("connection closed; buffered: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def reply(self):
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self):
        """After the 220 to STARTTLS: the handshake, no certificate check."""
        assert self.buf == b"", "bytes before the handshake: %r" % self.buf
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="relay.test")
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
