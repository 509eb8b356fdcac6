"""A fatal signal in the test process (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) writes
every thread's Python traceback to ``.pytest-faults/pytest-<pid>.log`` (or the
directory ``TEST_FAULT_DIR`` names), which ``.ci/run`` prints when the run fails.

pytest's own faulthandler plugin writes to stderr, which a crash can leave cut short or
buried; a file per process survives both and also covers pytest processes that tests
start themselves. A run that ends normally removes its empty file. Loaded from
``tests/conftest.py``; node processes get the same from ``PYTHONFAULTHANDLER=1``
(``loadtest.nodes.ServeProcess``, ``tests.cli.clean_env``) into their captured output.
"""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path
from typing import TextIO

import pytest

REPO = Path(__file__).resolve().parent.parent
_LOG = pytest.StashKey[TextIO]()


def fault_dir() -> Path:
    return Path(os.environ.get("TEST_FAULT_DIR") or REPO / ".pytest-faults")


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin, which it replaces
def pytest_configure(config: pytest.Config) -> None:
    directory = fault_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / f"pytest-{os.getpid()}.log").open("w", encoding="utf-8")
    config.stash[_LOG] = log
    faulthandler.enable(file=log, all_threads=True)


@pytest.hookimpl(tryfirst=True)  # before pytest's plugin restores its own handler
def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_LOG, None)
    if log is None:
        return
    faulthandler.disable()
    log.close()
    path = Path(log.name)
    if path.stat().st_size == 0:
        path.unlink()
