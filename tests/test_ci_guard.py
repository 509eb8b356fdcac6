"""Under CI=true a missing PostgreSQL fails the run instead of skipping (issue 2, line 2)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import repo_root

# Port 1 on loopback: nothing listens there, so the connection is refused at once.
NOWHERE = "postgresql://postgres@127.0.0.1:1/test"


def _run_postgres_half(ci: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(CI=ci, TEST_POSTGRES_URL=NOWHERE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_api_smoke.py", "-k", "postgresql"],
        cwd=repo_root(), env=env, capture_output=True, text=True, timeout=120, check=False)


def test_missing_postgres_fails_under_ci() -> None:
    """With CI=true the PostgreSQL tests error out, naming why."""
    result = _run_postgres_half("true")
    assert result.returncode != 0, result.stdout
    assert "CI must provide it" in result.stdout


def test_missing_postgres_skips_locally() -> None:
    """Without CI the same tests are skipped, and the run still passes."""
    result = _run_postgres_half("")
    assert result.returncode == 0, result.stdout
    assert "skipped" in result.stdout
