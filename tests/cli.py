"""Running the ``securechat`` command as its own process, the one way every test does
(tethered: it dies with the test run, see :mod:`loadtest.tether`)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

from loadtest import tether
from tests.conftest import CHEAP_HASHING_ENV, repo_root

TIMEOUT = 60  # seconds for any one command; start-up includes migrations and argon2


def clean_env(**settings: str) -> dict[str, str]:
    """os.environ without any SECURECHAT_* (from_env refuses unknown ones), plus
    ``settings`` as SECURECHAT_<NAME> (the argon2 cost is the tests' cheap one unless
    ``settings`` names it). A fatal signal in the child prints every
    thread's traceback to its stderr (``PYTHONFAULTHANDLER``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(CHEAP_HASHING_ENV)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_root()), env.get("PYTHONPATH")) if p)
    env.update({f"SECURECHAT_{name.upper()}": value for name, value in settings.items()})
    return env


def store_env(database_url: str, master_key: bytes) -> dict[str, str]:
    """A child's environment pointing at the test's database and master key."""
    return clean_env(database_url=database_url,
                     master_key=base64.b64encode(master_key).decode())


async def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None,
                  stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``python -m server ARGS`` to completion: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *tether.command(sys.executable, "-m", "server", *args), cwd=cwd or repo_root(),
        env=env, pass_fds=tether.pass_fds(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate(stdin.encode() if stdin is not None else b"")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), err.decode()
