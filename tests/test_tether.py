"""loadtest/tether.py: a process started by a test dies with the test run, even when the
run is killed by a signal and runs no cleanup; otherwise it is the command itself (pid,
output, exit status, signals)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loadtest import tether
from tests.conftest import repo_root

# A starter that runs a tethered node (``securechat serve`` through the shared
# ServeProcess), prints the node's pid once it answers /readyz, and waits to be killed.
STARTER = textwrap.dedent("""
    import asyncio, sys
    from loadtest.nodes import ServeProcess, node_env

    async def main():
        node = ServeProcess("orphan", node_env(database_url=sys.argv[1], master_key=bytes(32)))
        await node.start()
        print(node.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ends within ``timeout`` seconds (a pidfd turns readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


def test_a_tethered_command_is_the_command() -> None:
    """Same pid (signals reach the command itself), same output, same exit status."""
    done = subprocess.run(tether.command("sh", "-c", "echo $$; exit 3"),
                          pass_fds=tether.pass_fds(), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 3
    process = subprocess.Popen(tether.command("sh", "-c", "echo $$; exec sleep 600"),
                               pass_fds=tether.pass_fds(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert int(process.stdout.readline()) == process.pid
        process.terminate()
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGABRT], ids=["SIGKILL", "SIGABRT"])
def test_a_node_dies_when_its_starter_is_killed(sqlite_url: str, tmp_path: Path,
                                                how: signal.Signals) -> None:
    """The starter is killed outright (no cleanup runs): its node ends within seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root()), env.get("PYTHONPATH"))
                                        if p)
    starter = subprocess.Popen([sys.executable, "-c", STARTER, sqlite_url], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, text=True)
    node_pid = None
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()  # the node's pid, once it is ready
        assert line.strip().isdigit(), f"the starter failed: {line!r}"
        node_pid = int(line)
        assert wait_for_exit(node_pid, 0) is False  # it runs
        starter.send_signal(how)
        assert starter.wait(timeout=30) == -how
        assert wait_for_exit(node_pid, 15), "the node outlived its starter"
    finally:
        starter.kill()
        starter.wait()
        starter.stdout.close()
        if node_pid is not None and not wait_for_exit(node_pid, 0):
            os.kill(node_pid, signal.SIGKILL)
