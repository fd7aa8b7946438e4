"""A real knotd secondary on loopback, for the zone-transfer tests.

It transfers one zone from a primary, accepts NOTIFY from 127.0.0.1, and
keeps a journal of changes so that it asks for IXFR. Its files are capped
(like `ulimit -f`) so that a runaway transfer cannot fill the disk.
"""
import os
import resource
import shutil
import subprocess

import dns.rcode

import dnsdiff


def _limit_fsize():
    lim = 100000 * 1024  # like `ulimit -f 100000`
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))


KNOT_CONF = """\
server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    listen: 127.0.0.1@{port}
    tcp-workers: 1
    udp-workers: 1
    background-workers: 1

database:
    storage: "{d}"
    journal-db-max-size: 20M
    kasp-db-max-size: 5M
    timer-db-max-size: 5M
    catalog-db-max-size: 5M

control:
    listen: "{d}/knot.sock"

log:
  - target: stderr
    any: info

remote:
  - id: primary
    address: 127.0.0.1@{primary}

acl:
  - id: from_primary
    address: 127.0.0.1
    action: notify

template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: changes

zone:
  - domain: {zone}
    master: primary
    acl: from_primary
"""


def soa_serial(port, zone):
    with dnsdiff.Client(port) as c:
        r = c.query(zone + ".", "SOA", timeout=1.0)
    if r is None or r.rcode() != dns.rcode.NOERROR or not r.answer:
        return None
    return r.answer[0][0].serial


class Knot:
    def __init__(self, datadir, primary_port, port, zone):
        self.zone = zone
        self.dir = os.path.join(datadir, "knot")
        os.makedirs(self.dir)
        self.port = port
        conf = os.path.join(self.dir, "knot.conf")
        with open(conf, "w") as f:
            f.write(KNOT_CONF.format(d=self.dir, port=self.port, primary=primary_port, zone=zone))
        self.logf = open(os.path.join(self.dir, "knotd.log"), "wb")
        self.proc = subprocess.Popen([shutil.which("knotd") or "/usr/sbin/knotd", "-c", conf, "-s",
                                      os.path.join(self.dir, "knot.sock")],
                                     stdout=self.logf, stderr=subprocess.STDOUT, preexec_fn=_limit_fsize)

    def log(self):
        with open(os.path.join(self.dir, "knotd.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def serial(self):
        if self.proc.poll() is not None:
            raise AssertionError("knotd exited %s:\n%s" % (self.proc.returncode, self.log()))
        return soa_serial(self.port, self.zone)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
