"""Helpers for the listing system tests: run `mailrep` subcommands at a chosen
instant (MAILREP_NOW), write impact files, and parse the exports."""
import datetime
import os
import subprocess
import xml.etree.ElementTree as ET

from conftest import MAILREP

DAY = 86400


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=datetime.timezone.utc).timestamp())


def run(args, now=None, check=True, stdin=None, timeout=120):
    """Runs `mailrep ARGS` with MAILREP_NOW set to `now` (Unix seconds)."""
    env = dict(os.environ)
    if now is not None:
        env["MAILREP_NOW"] = iso(now)
    p = subprocess.run([MAILREP] + list(args), env=env, input=stdin, capture_output=True,
                       timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise AssertionError("mailrep %s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), p.returncode, out, err))
    return p.returncode, out, err


def write_impacts(path, rows):
    """rows: (time, ip[, trap ...]) tuples; written in the import format."""
    with open(path, "w") as f:
        for r in rows:
            f.write("\t".join([iso(r[0])] + [str(x) for x in r[1:]]) + "\n")


def xml_listings(path):
    """{(level, key): element attributes} of a mailrep XML export, without test entries."""
    root = ET.parse(path).getroot()
    out = {}
    for el in root:
        assert el.tag.endswith("listing"), el.tag
        if el.get("test") == "true":
            continue
        out[(int(el.get("level")), el.get("key"))] = dict(el.attrib)
    return out
