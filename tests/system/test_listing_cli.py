"""System tests of the listing commands: impact add/import, lookup, delist,
stats, export and traps, driven through the real binary with the clock set by
MAILREP_NOW."""
import json
import os

import pytest

from listing_helpers import DAY, iso, parse_iso, run, write_impacts, xml_listings

T0 = parse_iso("2026-03-02T00:00:00Z")


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "store.db")


@pytest.mark.parametrize("cmd", [["impact"], ["impact", "add"], ["impact", "import"], ["lookup"],
                                 ["delist"], ["stats"], ["export"], ["traps"]])
def test_every_command_has_help(cmd):
    rc, out, _ = run(cmd + ["--help"])
    assert rc == 0
    assert "usage: mailrep" in out


def test_add_lookup_and_expiry(db, tmp_path):
    ev = tmp_path / "msg.eml"
    ev.write_bytes(b"From: Spammer <s@example.net>\r\nSubject: Buy now\r\n"
                   b"Message-ID: <abc@example.net>\r\nX-Long: " + b"x" * 20000 + b"\r\n\r\nbody\r\n")
    run(["impact", "add", "--db", db, "11.9.8.7", "--trap", "probe@trap.example", "--evidence",
         str(ev), "--helo", "spam.example"], now=T0)
    rc, out, _ = run(["lookup", "--db", db, "11.9.8.7", "--json"], now=T0 + DAY)
    j = json.loads(out)
    assert j["listed"] is True
    [lvl] = j["levels"]
    assert lvl["level"] == 1 and lvl["key"] == "11.9.8.7"
    assert parse_iso(lvl["expires"]) == T0 + 7 * DAY
    [imp] = j["impacts"]
    assert imp["trap"] == "probe@trap.example"
    assert imp["subject"] == "Buy now"
    assert imp["message_id"] == "<abc@example.net>"
    assert imp["helo"] == "spam.example"
    assert 0 < imp["headers_bytes"] <= 8192
    assert lvl["evidence"] == [imp["id"]]
    assert j["self_service_delist"]["possible"] is True
    # a second impact extends the listing
    run(["impact", "add", "--db", db, "11.9.8.7"], now=T0 + 3 * DAY)
    j = json.loads(run(["lookup", "--db", db, "11.9.8.7", "--json"], now=T0 + 3 * DAY)[1])
    assert parse_iso(j["levels"][0]["expires"]) == T0 + 10 * DAY
    assert j["self_service_delist"]["possible"] is False
    # and it is gone, into the history, at the expiry
    j = json.loads(run(["lookup", "--db", db, "11.9.8.7", "--json"], now=T0 + 10 * DAY)[1])
    assert j["listed"] is False and j["levels"] == []
    [h] = j["history"]
    assert h["state"] == "expired" and parse_iso(h["removed_at"]) == T0 + 10 * DAY
    # text output says the same
    out = run(["lookup", "--db", db, "11.9.8.7"], now=T0 + 10 * DAY)[1]
    assert "not listed" in out and "expired" in out


def test_rfc5782_entries_and_reserved(db):
    run(["impact", "add", "--db", db, "127.0.0.1"], now=T0)
    run(["impact", "add", "--db", db, "10.1.1.1"], now=T0)
    run(["impact", "add", "--db", db, "::1"], now=T0)
    for ip, listed in [("127.0.0.2", True), ("127.0.0.1", False), ("::ffff:7f00:2", True),
                       ("::FFFF:7F00:1", False), ("10.1.1.1", False), ("::1", False)]:
        j = json.loads(run(["lookup", "--db", db, ip, "--json"], now=T0 + 1)[1])
        assert j["listed"] is listed, ip
    j = json.loads(run(["lookup", "--db", db, "10.1.1.1", "--json"], now=T0 + 1)[1])
    assert j["never_listed"] == "reserved"


def test_ipv6_level1(db, tmp_path):
    f = tmp_path / "imp.tsv"
    write_impacts(f, [(T0, "2a00:1450:4001::25", "t@x"), (T0 + 60, "2A00:1450:4001::25")])
    run(["impact", "import", "--db", db, str(f)], now=T0 + 120)
    j = json.loads(run(["lookup", "--db", db, "2a00:1450:4001:0::25", "--json"], now=T0 + 120)[1])
    assert j["listed"] and j["levels"][0]["impacts"] == 2
    out = tmp_path / "v6.txt"
    run(["export", "--db", db, "--format", "rbldnsd6", "--out", str(out)], now=T0 + 120)
    lines = out.read_text().splitlines()
    assert "2a00:1450:4001::25" in lines
    assert "::ffff:7f00:2 :127.0.0.2:RFC 5782 test entry" in lines


def test_import_reports_bad_lines(db, tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("# comment\n"
                 "%s\t11.1.1.1\n"
                 "garbage\n"
                 "%s\t11.1.1.300\n"
                 "\n"
                 "%s\t11.1.1.2\ttrap\n" % (iso(T0), iso(T0), iso(T0)))
    rc, _, err = run(["impact", "import", "--db", db, str(f)], now=T0 + 1, check=False)
    assert rc == 1
    assert "%s:3: " % f in err
    assert "%s:4: ip: bad address" % f in err
    assert "imported 2 impacts" in err and "2 rejected" in err
    # good lines were kept
    j = json.loads(run(["stats", "--db", db, "--json"], now=T0 + 1)[1])
    assert j["listed"]["1"] == 2


def test_import_from_stdin_in_batches(db):
    rows = "".join("%s\t11.7.%d.%d\n" % (iso(T0), i // 200, i % 200 + 1) for i in range(2500))
    rc, _, err = run(["impact", "import", "--db", db, "-", "--batch", "1000"], now=T0,
                     stdin=rows.encode())
    assert rc == 0, err
    j = json.loads(run(["stats", "--db", db, "--json"], now=T0)[1])
    assert j["listed"]["1"] == 2500
    assert j["new_48h"]["1"] == 2500


def test_delist_rules(db):
    ip = "11.5.5.5"
    run(["impact", "add", "--db", db, ip], now=T0)
    pol = ["--delist-quiet", "12h", "--delist-max", "2", "--delist-period", "7d"]
    rc, out, _ = run(["delist", "--db", db, ip, "--self-service", "--json"] + pol, now=T0 + 3600,
                     check=False)
    assert rc == 3 and json.loads(out)["outcome"] == "refused"
    rc, out, _ = run(["delist", "--db", db, ip, "--self-service"], now=T0 + 13 * 3600, check=False)
    assert rc == 0 and "delisted" in out
    j = json.loads(run(["lookup", "--db", db, ip, "--json"], now=T0 + 13 * 3600)[1])
    assert not j["listed"] and j["history"][0]["state"] == "delisted"
    # listed again when impacts continue
    run(["impact", "add", "--db", db, ip], now=T0 + DAY)
    j = json.loads(run(["lookup", "--db", db, ip, "--json"], now=T0 + DAY)[1])
    assert j["listed"] and len(j["history"]) == 2
    # the third self-service request in the period is refused by the limit
    rc, out, _ = run(["delist", "--db", db, ip, "--self-service"], now=T0 + 2 * DAY, check=False)
    assert rc == 3 and "limit" in out
    # the operator can always delist; a non-listed IP says so
    assert run(["delist", "--db", db, ip], now=T0 + 2 * DAY, check=False)[0] == 0
    assert run(["delist", "--db", db, "11.6.6.6"], now=T0 + 2 * DAY, check=False)[0] == 4
    j = json.loads(run(["stats", "--db", db, "--json"], now=T0 + 2 * DAY)[1])
    assert j["delist_requests_48h"] == 5
    assert j["listed"]["all"] == 0
    assert j["removed_48h"]["1"] == 2


def test_config_file_and_remembered_policy(db, tmp_path):
    pfx = tmp_path / "alloc.txt"
    pfx.write_text("11.20.0.0/27 tiny allocation\n")
    conf = tmp_path / "mailrep.conf"
    conf.write_text("[dnsbl]\nthreads = 2\n[listing]\nprefixes = %s\nwindow = 3d\n" % pfx)
    f = tmp_path / "i.tsv"
    write_impacts(f, [(T0, "11.20.0.1")])
    run(["impact", "import", "-c", str(conf), "--db", db, str(f)], now=T0)
    # a later command giving one setting keeps the other remembered ones
    run(["stats", "--db", db, "--delist-max", "5"], now=T0 + 1)
    # later commands without options use the remembered policy: the /27 (threshold 1)
    j = json.loads(run(["lookup", "--db", db, "11.20.0.9", "--json"], now=T0 + 1)[1])
    [lvl] = j["levels"]
    assert lvl["level"] == 2 and lvl["key"] == "11.20.0.0/27"
    assert "tiny allocation" in lvl["reason"]
    assert parse_iso(lvl["expires"]) == T0 + 3 * DAY
    bad = tmp_path / "bad.conf"
    bad.write_text("[listing]\nwindow = soon\n")
    rc, _, err = run(["stats", "-c", str(bad), "--db", db], check=False)
    assert rc == 2 and "bad.conf:2:" in err


def test_export_formats_are_atomic_and_complete(db, tmp_path):
    rows = [(T0, "11.30.0.%d" % i) for i in range(1, 5)] + [(T0, "11.31.0.1")]
    f = tmp_path / "i.tsv"
    write_impacts(f, rows)
    run(["impact", "import", "--db", db, str(f)], now=T0)
    for fmt in ["rbldnsd", "txt", "xml", "bind"]:
        out = tmp_path / ("out." + fmt)
        out.write_text("old")
        run(["export", "--db", db, "--format", fmt, "--out", str(out)], now=T0 + 1)
        assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]
        assert out.read_text() != "old"
    txt = (tmp_path / "out.txt").read_text().split()
    assert "11.30.0.0/24" in txt and "11.31.0.1" in txt and "127.0.0.2" in txt
    x = xml_listings(tmp_path / "out.xml")
    assert (2, "11.30.0.0/24") in x and x[(2, "11.30.0.0/24")]["impacts"] == "4"
    assert len([k for k in x if k[0] == 1]) == 5
    # an export to an unwritable place fails loudly and leaves nothing behind
    rc, _, err = run(["export", "--db", db, "--format", "txt", "--out", str(tmp_path / "no" / "x")],
                     now=T0, check=False)
    assert rc != 0 and "cannot create" in err


def test_traps(db):
    run(["traps", "add", "--db", db, "probe-1@unsub.example", "--kind", "unsubscribe-probe"])
    run(["traps", "add", "--db", db, "trap.example", "--kind", "domain"])
    j = json.loads(run(["traps", "list", "--db", db, "--json"])[1])
    assert {t["address"]: t["kind"] for t in j} == {"probe-1@unsub.example": "unsubscribe-probe",
                                                     "trap.example": "domain"}
    assert run(["traps", "add", "--db", db, "x", "--kind", "bogus"], check=False)[0] == 2


def test_export_every_runs_on_schedule_until_stopped(db, tmp_path):
    import signal
    import subprocess
    import time as _time

    from conftest import MAILREP
    run(["impact", "add", "--db", db, "11.8.0.1"])
    out = tmp_path / "bl.txt"
    p = subprocess.Popen([MAILREP, "export", "--db", db, "--format", "txt", "--out", str(out),
                          "--every", "1s"], stderr=subprocess.PIPE)
    try:
        deadline = _time.time() + 20
        while not (out.exists() and "11.8.0.1" in out.read_text()):
            assert _time.time() < deadline, "first export did not appear"
            _time.sleep(0.05)
        run(["impact", "add", "--db", db, "11.8.0.2"])
        while "11.8.0.2" not in out.read_text():
            assert _time.time() < deadline, "the scheduled export did not pick up the new listing"
            _time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_exports_are_world_readable_whatever_the_umask(db, tmp_path):
    run(["impact", "add", "--db", db, "11.8.1.1"], now=T0)
    out = tmp_path / "bl.ip4set"
    old = os.umask(0o077)
    try:
        run(["export", "--db", db, "--format", "rbldnsd", "--out", str(out)], now=T0)
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_operator_delists_an_allocation(db, tmp_path):
    f = tmp_path / "i.tsv"
    write_impacts(f, [(T0, "11.60.0.%d" % i) for i in range(1, 5)])
    run(["impact", "import", "--db", db, str(f)], now=T0)
    j = json.loads(run(["lookup", "--db", db, "11.60.0.200", "--json"], now=T0 + 1)[1])
    assert [(l["level"], l["key"]) for l in j["levels"]] == [(2, "11.60.0.0/24")]
    rc, out, _ = run(["delist", "--db", db, "11.60.0.200", "--level", "2", "--json"], now=T0 + 2,
                     check=False)
    assert rc == 0 and json.loads(out)["outcome"] == "delisted"
    j = json.loads(run(["lookup", "--db", db, "11.60.0.1", "--json"], now=T0 + 3)[1])
    assert [(l["level"], l["key"]) for l in j["levels"]] == [(1, "11.60.0.1")]
    assert any(h["level"] == 2 and h["state"] == "delisted" for h in j["history"])
    # only impacts after the delisting count for the allocation again: 3 are not enough, 4 are
    write_impacts(f, [(T0 + 10, "11.60.0.%d" % i) for i in range(1, 4)])
    run(["impact", "import", "--db", db, str(f)], now=T0 + 10)
    j = json.loads(run(["lookup", "--db", db, "11.60.0.200", "--json"], now=T0 + 10)[1])
    assert j["levels"] == []
    run(["impact", "add", "--db", db, "11.60.0.9"], now=T0 + 11)
    j = json.loads(run(["lookup", "--db", db, "11.60.0.200", "--json"], now=T0 + 11)[1])
    [l2] = j["levels"]
    assert l2["key"] == "11.60.0.0/24" and l2["impacts"] == 4
