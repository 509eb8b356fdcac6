"""A fatal signal in a pytest process leaves every thread's traceback in its fault log
(tests/crash_log.py), and a run that ends normally leaves no file behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import repo_root

ABORTS = """
import os
import threading
import time


def test_aborts():
    threading.Thread(target=time.sleep, args=(30,), name="bystander", daemon=True).start()
    os.abort()
"""

PASSES = """
def test_passes():
    pass
"""


def run_pytest(tmp_path: Path, source: str, faults: Path) -> subprocess.CompletedProcess[str]:
    """pytest on one file of ``source``, with only the crash-log plugin loaded."""
    (tmp_path / "test_it.py").write_text(source)
    env = {**os.environ, "TEST_FAULT_DIR": str(faults),
           "PYTHONPATH": os.pathsep.join(p for p in (str(repo_root()),
                                                     os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "tests.crash_log", "--rootdir", str(tmp_path), "test_it.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_abort_writes_every_threads_traceback(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    result = run_pytest(tmp_path, ABORTS, faults)
    assert result.returncode < 0, result.stdout  # killed by the signal
    logs = [log for log in faults.glob("pytest-*.log") if log.stat().st_size]
    assert len(logs) == 1, (list(faults.iterdir()), result.stderr)
    text = logs[0].read_text()
    assert "Fatal Python error: Aborted" in text
    assert "Current thread 0x" in text and "test_aborts" in text  # the crashing thread
    assert "\nThread 0x" in text  # and the bystander


def test_normal_run_leaves_no_log(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    result = run_pytest(tmp_path, PASSES, faults)
    assert result.returncode == 0, result.stdout
    assert list(faults.iterdir()) == []
