"""Real ``securechat serve`` node processes and the private PostgreSQL database they run
on: the one place that starts nodes for the benchmark, the cluster tests and the
fault-injection suite (tests may import ``loadtest``; the load tools never import tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from loadtest import tether

REPO = Path(__file__).resolve().parent.parent
ORIGIN = "http://loadtest.local"
# Lines of a node's output kept: enough for any test or benchmark to search, bounded so
# a storm of warnings cannot grow the runner's memory without end.
MAX_LOG_LINES = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env(*, database_url: str, master_key: bytes, redis_url: str | None = None,
             origin: str = ORIGIN, settings: Mapping[str, str] | None = None,
             **extra: str) -> dict[str, str]:
    """The environment of a node: none of the caller's ``SECURECHAT_*`` variables, then
    the store, the key, the origin, and the settings (``settings`` and ``extra`` are
    both lower-case setting names, e.g. ``sync_interval_seconds="1"``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update({
        "SECURECHAT_DATABASE_URL": database_url,
        "SECURECHAT_MASTER_KEY": base64.b64encode(master_key).decode(),
        "SECURECHAT_PUBLIC_URL": origin,
        "SECURECHAT_ALLOWED_ORIGINS": origin,
    })
    if redis_url:
        env["SECURECHAT_REDIS_URL"] = redis_url
    for name, value in {**(settings or {}), **extra}.items():
        env[f"SECURECHAT_{name.upper()}"] = value
    return env


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
               every: float = 0.05) -> None:
    """Ask ``check`` until it says yes, for at most ``timeout`` seconds (waiting on
    another process's state, which sends nothing when it changes)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)  # the other process has no way to tell us: ask again


async def readiness(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await client.get("/readyz")
        return response.status_code, response.json()


class ServeProcess:
    """``python -m server serve`` on a port of its own, its output kept line by line.
    It may be stopped (SIGTERM), killed (SIGKILL) and started again on the same port, and
    dies with the process that started it (:mod:`loadtest.tether`).
    A fatal signal in it prints every thread's traceback into its log
    (``PYTHONFAULTHANDLER``)."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None
        self._changed = asyncio.Condition()
        self._ended = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 60.0, *, ready: bool = True) -> None:
        """Start, then wait until ``/readyz`` answers 200 (``ready=False``: answers at
        all, for a start while a dependency is down). Ready-by-HTTP works whatever the
        node's log level."""
        self._ended = False
        self.process = await asyncio.create_subprocess_exec(
            *tether.command(sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
                            "--port", str(self.port)),
            env={**self.env, "PYTHONFAULTHANDLER": "1"}, cwd=REPO,
            pass_fds=tether.pass_fds(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read_log())

        async def started() -> bool:
            if self._ended or self.process is None or self.process.returncode is not None:
                raise AssertionError(self._tail("exited during start-up"))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status, _ = await readiness(self.url)
                return status == 200 or not ready
            return False

        try:
            await poll(started, timeout, f"node {self.name} start-up", every=0.1)
        except AssertionError as exc:
            raise AssertionError(self._tail(str(exc))) from None

    async def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                async with self._changed:
                    if len(self.lines) < MAX_LOG_LINES:
                        self.lines.append(raw.decode(errors="replace").rstrip())
                    self._changed.notify_all()
        finally:
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    def _tail(self, what: str) -> str:
        return f"node {self.name} {what}:\n" + "\n".join(self.lines[-30:])

    async def wait_log(self, text: str, timeout: float, start: int = 0) -> str:
        """The first log line from index ``start`` on that contains ``text``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for line in self.lines[start:]:
                        if text in line:
                            return line
                    if self._ended:
                        raise AssertionError(self._tail(f"exited before logging {text!r}"))
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(self._tail(f"did not log {text!r} in {timeout}s")) from None

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: sockets get 1012), SIGKILL if it does not end in ``timeout``."""
        return await self._end(signal.SIGTERM, timeout)

    async def kill(self) -> int | None:
        """SIGKILL: no shutdown at all, as when the machine dies."""
        return await self._end(signal.SIGKILL, 10.0)

    async def _end(self, how: signal.Signals, timeout: float) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(how)
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump
        return self.process.returncode

    def errors(self) -> list[str]:
        """Log lines that report a failure."""
        return [line for line in self.lines
                if any(word in line for word in ("ERROR", "Traceback", "exception"))]


@contextlib.asynccontextmanager
async def running(*nodes: ServeProcess) -> AsyncIterator[tuple[ServeProcess, ...]]:
    """Start ``nodes`` together; stop them all afterwards whatever happens."""
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


# --- PostgreSQL ----------------------------------------------------------------------------

def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_execute(url: str, statement: str, *args: object) -> str:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        return await conn.execute(statement, *args)
    finally:
        await conn.close()


async def terminate_backends(url: str) -> int:
    """``pg_terminate_backend`` on every connection to ``url``'s database but our own
    (a PostgreSQL restart, as the nodes see it); how many were ended."""
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        return await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", make_url(url).database)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def private_postgres(admin_url: str, *, prefix: str = "securechat_bench",
                           template: str | None = None) -> AsyncIterator[str]:
    """A database of the run's own on the server ``admin_url`` points at, named per run
    (so its connections can be told apart), dropped afterwards whatever happens. It is
    migrated, or copied from ``template`` (a database nobody is connected to)."""
    from server.store import migrate

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await pg_execute(admin_url, f'CREATE DATABASE "{name}"{copy}')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        if template is None:
            await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
