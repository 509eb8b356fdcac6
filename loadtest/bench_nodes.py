"""What the benchmark runs against: ``securechat serve`` processes it starts itself, a
private PostgreSQL database, and readings of a process's memory and CPU from /proc."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
ORIGIN = "http://loadtest.local"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env(*, database_url: str, master_key: bytes, redis_url: str | None,
             settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of a node: none of the caller's ``SECURECHAT_*`` variables, then
    the store, the key, the origin and the benchmark's explicit ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update({
        "SECURECHAT_DATABASE_URL": database_url,
        "SECURECHAT_MASTER_KEY": base64.b64encode(master_key).decode(),
        "SECURECHAT_PUBLIC_URL": ORIGIN,
        "SECURECHAT_ALLOWED_ORIGINS": ORIGIN,
    })
    if redis_url:
        env["SECURECHAT_REDIS_URL"] = redis_url
    env.update({f"SECURECHAT_{name.upper()}": value for name, value in settings.items()})
    return env


class Node:
    """``python -m server serve`` on a free port, its output kept line by line."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 60.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), env=self.env, cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read_log())
        # The node logs at WARNING (no start-up line to wait for): ask /readyz instead.
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(self._tail("exited during start-up"))
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(self._tail(f"not ready in {timeout}s"))
                await asyncio.sleep(0.1)

    async def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if len(self.lines) < 10_000:
                self.lines.append(line)

    def _tail(self, what: str) -> str:
        return f"node {self.name} {what}:\n" + "\n".join(self.lines[-30:])

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: sockets get 1012), SIGKILL after ``timeout``."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.terminate()
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
        """Log lines that report a failure (the benchmark prints them)."""
        return [line for line in self.lines
                if any(word in line for word in ("ERROR", "Traceback", "exception"))]


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[tuple[Node, ...]]:
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


# --- PostgreSQL ----------------------------------------------------------------------------

async def _pg_execute(url: str, statement: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def private_postgres(admin_url: str) -> AsyncIterator[str]:
    """A database of the run's own on the server ``admin_url`` points at (created,
    migrated, and dropped afterwards whatever happens)."""
    from server.store import migrate

    name = f"securechat_bench_{os.getpid()}_{secrets.token_hex(3)}"
    await _pg_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await _pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- /proc readings ------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The process's hard limit on open files."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[4])
    raise RuntimeError(f"no open-files limit for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class CpuMeter:
    """CPU use of some processes over an interval, in percent of one core."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = time.perf_counter()
        self._cpu = {name: self._read(pid) for name, pid in self._pids.items()}

    @staticmethod
    def _read(pid: int) -> float:
        if pid == os.getpid():
            return time.process_time()
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def percent(self) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self._start)
        return {name: round(100 * (self._read(pid) - self._cpu[name]) / elapsed, 1)
                for name, pid in self._pids.items()}
