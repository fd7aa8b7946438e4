"""A throwaway private Postfix instance on loopback, as a real SMTP peer for
tests and benchmarks.

Everything lives in one temporary directory: the configuration directory
(main.cf, master.cf), the queue, the data directory and the log file
(`maillog_file`, through postlogd; no syslog). smtpd listens on
127.0.0.1:PORT only, accepts relaying from 127.0.0.0/8, does no local
delivery, and hands every message to `relayhost = [127.0.0.1]:SINKPORT`.
smtpd can offer STARTTLS with a certificate and key the caller gives.

Why a naive instance "does not start", and what this helper does about it:
- the postfix user must reach the queue and data directories: a mkdtemp
  directory is mode 0700, and master dies with "open lock file
  .../data/master.lock: Permission denied"; the top directory is made 0755;
- Postfix refuses a log file outside `maillog_file_prefixes` (default
  /var and /dev/stdout), and logging to a file needs the postlogd service
  in master.cf; with either missing, and no syslog daemon, `postfix check`
  fails without printing a word. The prefix list here is the instance
  directory, and master.cf has postlogd;
- Debian's master.cf runs smtpd, pickup, cleanup and smtp chrooted in the
  queue directory, which would need copies of /etc files there: every
  service here runs unchrooted;
- the directories Postfix creates itself (queue subdirectories, pid/) come
  from `postfix check`'s create-missing step, run by `postfix start`, and
  postfix-files is read from the package's meta_directory (/etc/postfix).

Use it as a context manager or call start()/stop(); stop() waits until the
master and every child are gone. Run as root (the tests and benches do).

    with PostfixInstance(sink_port=12525, port=12526) as pf:
        ...          # pf.port, pf.maillog(), pf.queue_count()
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{port} inet n - n - {smtpd_procs} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    """A private Postfix: smtpd on 127.0.0.1:port, relaying to
    [127.0.0.1]:sink_port. tls=(certfile, keyfile) offers STARTTLS.
    concurrency sets the delivery concurrency to the relayhost; extra is a
    dict of further main.cf parameters."""

    def __init__(self, sink_port, port=None, tls=None, hostname="postfix.test",
                 concurrency=20, extra=None, smtpd_procs=100, workdir=None):
        self.port = port or free_port()
        self.sink_port = sink_port
        self.tls = tls
        self.hostname = hostname
        self.concurrency = concurrency
        self.extra = dict(extra or {})
        self.smtpd_procs = smtpd_procs
        self.owns_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="postfix-")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the postfix user must reach the queue
        self.conf = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "maillog")
        self.started = False

    # ---- configuration --------------------------------------------------

    def main_cf(self):
        c = self.concurrency
        p = {
            "compatibility_level": "3.6",
            "config_directory": self.conf,
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "test",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "relayhost": "[127.0.0.1]:%d" % self.sink_port,
            # no local delivery, no lookups of local users, no DNS
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "biff": "no",
            # the same delivery concurrency as the relay it is compared with
            "default_destination_concurrency_limit": str(c),
            "smtp_destination_concurrency_limit": str(c),
            "relay_destination_concurrency_limit": str(c),
            "initial_destination_concurrency": str(c),
            "default_process_limit": str(max(100, 2 * c)),
            "smtp_connection_cache_on_demand": "yes",
            # a test instance: no waiting for slow starts, no backoff floors
            "in_flow_delay": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "message_size_limit": "52428800",
            # logging without syslog
            "maillog_file": self.logfile,
            "maillog_file_prefixes": self.dir,
            "smtputf8_enable": "no",
            "shlib_directory": "/usr/lib/postfix",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
        }
        if self.tls:
            cert, key = self.tls
            p.update({
                "smtpd_tls_security_level": "may",
                "smtpd_tls_cert_file": cert,
                "smtpd_tls_key_file": key,
                "smtpd_tls_loglevel": "1",
            })
        p.update(self.extra)
        return "".join("%s = %s\n" % kv for kv in p.items())

    def write_config(self):
        for d in (self.conf, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.conf, 0o755)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port="127.0.0.1:%d" % self.port,
                                     smtpd_procs=self.smtpd_procs))
        # the data directory belongs to the mail owner (postfix check would
        # create it so, but only if missing)
        shutil.chown(self.data, "postfix", "postfix")

    # ---- running --------------------------------------------------------

    def run(self, *args, check=True, timeout=60):
        p = subprocess.run([POSTFIX, "-c", self.conf] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("postfix %s failed (%d): %s%s\n--- maillog:\n%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr, self.maillog()))
        return p

    def check(self):
        """`postfix check`: problems with the configuration or ownership."""
        return self.run("check", check=False)

    def start(self, timeout=20.0):
        self.write_config()
        chk = self.check()
        if chk.returncode != 0:
            raise RuntimeError("postfix check: %s%s" % (chk.stdout, chk.stderr))
        self.run("start")
        self.started = True
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("postfix does not listen on %d\n--- maillog:\n%s"
                                       % (self.port, self.maillog()))
                time.sleep(0.05)

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def children(self, pid):
        """Every process whose parent is pid (the master's services)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
            except OSError:
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
        return out

    def stop(self, timeout=20.0):
        """Stops master and its children; waits until none is left."""
        if not self.started:
            self.cleanup()
            return
        pid = self.master_pid()
        kids = self.children(pid) if pid else []
        self.run("stop", check=False)
        deadline = time.time() + timeout
        for p in ([pid] if pid else []) + kids:
            while alive(p) and time.time() < deadline:
                time.sleep(0.05)
            if alive(p):
                try:
                    os.kill(p, 9)
                except OSError:
                    pass
        self.started = False
        self.cleanup()

    def cleanup(self):
        if self.owns_dir and not os.environ.get("KEEP_POSTFIX_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- looking at it --------------------------------------------------

    def maillog(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def queue_count(self):
        """Messages in the queue (incoming, active, deferred, hold), counted
        by walking the queue directories as `postqueue -p` would show them."""
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n

    def postqueue(self):
        return subprocess.run([POSTQUEUE, "-c", self.conf, "-p"], capture_output=True,
                              text=True, timeout=30).stdout


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
