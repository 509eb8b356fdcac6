"""Run a command that dies with the process that started it, however that one ends.

A test run killed by a signal (SIGKILL, or SIGABRT from a fatal error) runs no cleanup,
so the nodes, commands and redis-servers it started would live on, holding ports and
database connections. Every such process is started through this launcher instead:

    argv = tether.command("python", "-m", "server", "serve", ...)
    subprocess.Popen(argv, pass_fds=tether.pass_fds(), ...)

The starter holds the write end of a pipe for its whole life and never writes to it; the
kernel closes it when the starter dies, however it dies. The launcher forks a watchdog
that holds the read end, then ``exec``s the command in its own place, so the command
keeps the pid, signals, stdin/stdout and exit status the starter sees. The watchdog
waits for either end: EOF on the pipe (the starter died) kills the command; the
command's own exit (a pidfd) ends the watchdog.

Not PR_SET_PDEATHSIG: that fires when the *thread* that forked exits (a child started
from an ``asyncio.to_thread`` worker would die with the worker), and setting it needs a
``preexec_fn``, which is unsafe in a process with threads.

This file is also the launcher itself (``python loadtest/tether.py FD COMMAND...``), run
by path, so it imports nothing from the project and works from any working directory.
"""

from __future__ import annotations

import os
import select
import signal
import sys

_read_end: int | None = None


def pass_fds() -> tuple[int, ...]:
    """The descriptor every tethered child must inherit (``Popen(pass_fds=...)``)."""
    global _read_end
    if _read_end is None:
        # The write end is deliberately never closed: the kernel closes it at our exit.
        _read_end, _write_end = os.pipe()
    return (_read_end,)


def command(*argv: str) -> list[str]:
    """``argv`` run through the launcher, tethered to this process."""
    (fd,) = pass_fds()
    return [sys.executable, os.path.abspath(__file__), str(fd), *argv]


def _watch(tether: int, command: int) -> None:
    """In the watchdog: wait for the starter's death or the command's exit (``command``
    is a pidfd, so a reused pid can never be killed by mistake)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the command's readers must see EOF when the command ends
        os.dup2(devnull, fd)
    readable, _, _ = select.select([tether, command], [], [])
    if tether in readable and not os.read(tether, 1):
        signal.pidfd_send_signal(command, signal.SIGKILL)


def main(args: list[str]) -> None:
    tether, argv = int(args[0]), args[1:]
    command = os.pidfd_open(os.getpid())  # opened before the fork: it is this process
    if os.fork() == 0:
        try:
            _watch(tether, command)
        finally:
            os._exit(0)
    os.close(tether)
    os.close(command)
    os.execvp(argv[0], argv)  # noqa: S606 - the command is the starter's own argv


if __name__ == "__main__":
    main(sys.argv[1:])
