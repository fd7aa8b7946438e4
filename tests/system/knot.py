"""Starts Debian's knotd on a free loopback port with test zones, for the
system tests that resolve names (DKIM keys, SPF and DMARC records). Each
server gets its own configuration, zone files and run directory in a
temporary directory."""
import os
import shutil
import subprocess

from conftest import Server, free_port, wait_dns

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"


def start_knot(tmpdir, zones, signed=()):
    """zones: {origin: zone-file text}; the origins in `signed` are signed by
    knot itself (DNSSEC, one ECDSA P-256 CSK each, keys in its KASP database
    under tmpdir). Returns a Server; .resolver is HOST:PORT."""
    port = free_port()
    rundir = os.path.join(tmpdir, "knot-%d" % port)
    os.makedirs(rundir)
    conf = ["server:", '  rundir: "%s"' % rundir, "  listen: 127.0.0.1@%d" % port,
            "  udp-workers: 1", "  tcp-workers: 1", "  background-workers: 1",
            "database:", '  storage: "%s"' % rundir,
            "log:", "  - target: stderr", "    any: warning",
            "policy:", "  - id: test", "    algorithm: ecdsap256sha256",
            "    single-type-signing: on", "    nsec3: off",
            "template:", "  - id: default", '    storage: "%s"' % rundir, '    file: "%s.zone"',
            "zone:"]
    for origin, text in zones.items():
        conf.append("  - domain: %s" % origin)
        if origin in signed:
            conf += ["    dnssec-signing: on", "    dnssec-policy: test"]
        with open(os.path.join(rundir, "%s.zone" % origin), "w") as f:
            f.write(text)
    cpath = os.path.join(rundir, "knot.conf")
    with open(cpath, "w") as f:
        f.write("\n".join(conf) + "\n")
    srv = Server([KNOTD, "-c", cpath], port, os.path.join(rundir, "knotd.log"))
    try:
        wait_dns(port, name=next(iter(zones)), rdtype="SOA", rdclass="IN", proc=srv.proc)
    except Exception:
        srv.stop()
        raise RuntimeError("knotd failed to start:\n" + srv.output())
    srv.resolver = "127.0.0.1:%d" % port
    return srv


def soa(origin):
    return ("$ORIGIN %s.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n"
            "@ NS ns\nns A 127.0.0.1\n" % origin)
