"""The session guard of tests/conftest.py (`checkout_stays_clean`): a test session that writes into the checkout's
top folder fails, naming what it wrote; one that writes under tmp_path passes."""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT

WRITES_INTO_CHECKOUT = """
from conftest import ROOT

def test_writes():
    (ROOT / "mlflow.db").write_bytes(b"")  # what MLflow does with no tracking URI set
"""
WRITES_UNDER_TMP = """
def test_writes(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
"""


def session(tmp_path, test_source: str) -> subprocess.CompletedProcess:
    """A pytest session in a copy of the project's conftest.py, whose top folder is `tmp_path`."""
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_it.py").write_text(test_source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_it.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_session_writing_into_the_checkout_fails_naming_the_file(tmp_path):
    done = session(tmp_path, WRITES_INTO_CHECKOUT)
    assert done.returncode == 1 and "the tests wrote ['mlflow.db'] into the checkout" in done.stdout, done.stdout


def test_a_session_writing_under_tmp_path_passes(tmp_path):
    done = session(tmp_path, WRITES_UNDER_TMP)
    assert done.returncode == 0, done.stdout
