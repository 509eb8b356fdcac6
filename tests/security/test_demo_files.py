"""The demo's database is its owner's alone (issue 13): ``securechat demo`` makes
``./data`` 0700 and the SQLite database (with its ``-wal`` and ``-shm``) 0600 under the
usual umask 022, and tightens files an earlier version left world-readable.

Before the fix SQLite created the database under the umask (0644) in a 0755 directory:
any local user could copy every ciphertext, blind index and password hash.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from loadtest import tether
from loadtest.nodes import free_port
from tests.cli import TIMEOUT, clean_env
from tests.test_cli import drain, next_line


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run_demo_until_started(cwd: Path) -> None:
    """``securechat demo`` under umask 022, from start-up to a graceful stop."""
    process = await asyncio.create_subprocess_exec(
        *tether.command(sys.executable, "-m", "server", "demo", "--port", str(free_port())),
        cwd=cwd, env=clean_env(), pass_fds=tether.pass_fds(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, preexec_fn=lambda: os.umask(0o022))
    out: list[str] = []
    err: list[str] = []
    drains = [asyncio.create_task(drain(process.stdout, out))]
    try:
        async with asyncio.timeout(TIMEOUT):
            await next_line(process.stderr, err, "Application startup complete")
        drains.append(asyncio.create_task(drain(process.stderr, err)))
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for task in drains:
            task.cancel()


@pytest.mark.parametrize("earlier", [False, True], ids=["fresh", "left-by-an-earlier-version"])
async def test_the_demo_database_is_private(tmp_path: Path, earlier: bool) -> None:
    data = tmp_path / "data"
    if earlier:  # what earlier versions left: a 0755 directory and a 0644 database
        data.mkdir(mode=0o755)
        os.chmod(data, 0o755)
        (data / "securechat.db").touch()
        os.chmod(data / "securechat.db", 0o644)
    await run_demo_until_started(tmp_path)
    assert mode(data) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("securechat.db")]
    assert data / "securechat.db" in files
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(data / "master.key") == 0o600
