"""The openspf RFC 7208 suite, converted afresh from its YAML and run by the
C driver (the unit test test_auth_spf, which serves each scenario's zone
data through the in-memory DNS backend). Also checks that the converted copy
checked in next to the YAML is up to date, since ctest reads that one."""
import os
import subprocess
import sys

from conftest import MAILREP, ROOT

DATA = os.path.join(ROOT, "tests", "data", "spf")


def convert():
    return subprocess.run([sys.executable, os.path.join(DATA, "yaml2txt.py"),
                           os.path.join(DATA, "rfc7208-tests.yml")],
                          check=True, capture_output=True, text=True).stdout


def test_converted_copy_is_current():
    with open(os.path.join(DATA, "rfc7208-tests.txt"), encoding="utf-8") as f:
        assert f.read() == convert()


def test_rfc7208_suite_all_pass(tmp_path):
    path = tmp_path / "suite.txt"
    path.write_text(convert())
    driver = os.path.join(os.path.dirname(MAILREP), "test_auth_spf")
    p = subprocess.run([driver, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rfc7208 suite: 203/203 passed" in p.stderr
