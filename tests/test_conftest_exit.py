"""The suite's exit (tests/conftest.py): the process exits normally with pytest's verdict, and a child process a test
started does not outlive the run.

A copy of conftest.py runs a throwaway suite in a subprocess: a failing test must give exit status 1, the summary
must reach stdout, and the child must be gone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

_SUITE = """
import subprocess
from pathlib import Path

def test_starts_a_child():
    child = subprocess.Popen(["sleep", "300"])
    Path({pid_file!r}).write_text(str(child.pid))

def test_fails():
    assert 1 == 2
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_the_suite_keeps_pytests_status_and_stops_children(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    pid_file = tmp_path / "child.pid"
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(_SUITE.format(pid_file=str(pid_file))))

    failing = _run(tmp_path)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "1 failed, 1 passed" in failing.stdout
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    passing = _run(tmp_path, "-k", "child")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "1 passed, 1 deselected" in passing.stdout

    nothing = _run(tmp_path, "-k", "no_such_test")
    assert nothing.returncode == 5  # pytest's "no tests collected", passed through unchanged
