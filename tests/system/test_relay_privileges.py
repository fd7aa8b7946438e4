"""The relay gives up root after binding (--user): it runs as that user,
the spool is handed to it, and everything still works — delivery, the
control socket, a restart on the same spool. Root and unknown users are
refused as targets; without --user the relay becomes "mailrep" or nobody."""
import os
import pwd
import subprocess

from conftest import datadir, servers  # noqa: F401 (fixtures)
from relay_util import (MAILREP, events, message, start_relay, start_sink, stop_clean, submit,
                        wait_for)

NOBODY = pwd.getpwnam("nobody")


def uids(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return []


def test_relay_runs_as_the_user_after_binding(datadir, servers):
    assert os.geteuid() == 0, "this test needs root, as the relay's privilege drop does"
    sink = start_sink(datadir)
    servers.append(sink)
    args = ["--route", "*=" + sink.hop, "--trusted", "127.0.0.1/32", "--user", "nobody"]
    relay = start_relay(datadir, args)
    servers.append(relay)
    # real, effective, saved and filesystem uid: all nobody's
    assert uids(relay.proc.pid) == [NOBODY.pw_uid] * 4, uids(relay.proc.pid)
    assert "running as nobody" in relay.output()
    st = os.stat(relay.spool)
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY.pw_uid, 0o700)
    submit(relay.port, "alice@example.com", ["bob@dest.example"], message("priv"))
    assert wait_for(lambda: [e for e in events(relay) if e["event"] == "delivery"]), \
        relay.output()
    # the control socket was made by the unprivileged relay, and answers
    ctl = os.path.join(relay.spool, "control")
    assert os.stat(ctl).st_uid == NOBODY.pw_uid
    q = subprocess.run([MAILREP, "queue", "--spool", relay.spool, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert q.returncode == 0 and '"total"' in q.stdout, q.stdout + q.stderr
    # every file it wrote is its own
    for name in os.listdir(relay.spool):
        assert os.lstat(os.path.join(relay.spool, name)).st_uid == NOBODY.pw_uid, name
    stop_clean(relay)
    # a restart on the same spool, again as nobody
    again = start_relay(datadir, args, spool=relay.spool, port=relay.port, name="again")
    servers.append(again)
    assert uids(again.proc.pid) == [NOBODY.pw_uid] * 4
    submit(again.port, "alice@example.com", ["carol@dest.example"], message("priv2"))
    assert wait_for(lambda: len([e for e in events(again) if e["event"] == "delivery"]) == 2), \
        again.output()
    stop_clean(again)


def test_root_becomes_the_default_user(datadir, servers):
    """Without --user a relay started as root still gives root up: to
    "mailrep" if that user exists, else to nobody."""
    try:
        default = pwd.getpwnam("mailrep")
    except KeyError:
        default = NOBODY
    relay = start_relay(datadir, ["--trusted", "127.0.0.1/32"])
    servers.append(relay)
    assert uids(relay.proc.pid) == [default.pw_uid] * 4, uids(relay.proc.pid)
    assert "running as %s" % default.pw_name in relay.output()
    stop_clean(relay)


def test_bad_users_are_refused(datadir):
    for user, what in [("root", "refusing to run as root"),
                       ("no-such-user-here", "unknown user 'no-such-user-here'"),
                       ("nobody:no-such-group", "unknown group 'no-such-group'")]:
        r = subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:0",
                            "--spool", os.path.join(datadir, "s-" + user.replace(":", "-")),
                            "--user", user], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and what in r.stderr, (user, r.stderr)


def test_spool_the_user_cannot_reach_is_refused(datadir):
    closed = os.path.join(datadir, "closed")
    os.mkdir(closed, 0o700)
    r = subprocess.run([MAILREP, "relay", "--listen", "127.0.0.1:0", "--trusted", "127.0.0.1",
                        "--spool", os.path.join(closed, "spool"), "--user", "nobody"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not usable as nobody" in r.stderr and \
        "parent directories" in r.stderr, r.stderr
