"""Nodes for the cluster tests: several apps under real uvicorn in the test's process
(each with its own broker), or ``securechat serve`` as separate OS processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import uvicorn

from server.app import create_app
from server.brokers.base import Broker
from server.clock import Clock
from server.settings import Settings
from tests.conftest import ORIGIN, PASSWORD, RunningServer, repo_root
from tests.serving import serve_app


class Node(RunningServer):
    """A running in-process node: its URL, services and hub."""

    def __init__(self, url: str, app: Any, uv: uvicorn.Server, task: asyncio.Task) -> None:
        super().__init__(url, app.state.services)
        self.app = app
        self._uv = uv
        self._task = task

    @property
    def hub(self):
        return self.app.state.hub

    async def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown, as on SIGTERM: sockets are closed with 1012 (idempotent)."""
        self._uv.should_exit = True
        async with asyncio.timeout(timeout):
            await self._task


@contextlib.asynccontextmanager
async def in_process_node(settings: Settings, master_key: bytes, clock: Clock,
                          broker: Broker) -> AsyncIterator[Node]:
    """``create_app`` under real uvicorn on a bound socket, on the test's loop (as the
    ``server`` fixture does), with the given broker."""
    app = create_app(settings, master_key, clock=clock, broker=broker)
    async with serve_app(app) as served:
        yield Node(served.url, app, served.uvicorn, served.task)


# --- nodes as processes --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env(*, database_url: str, redis_url: str, master_key: bytes,
             **extra: str) -> dict[str, str]:
    """A clean environment for ``securechat serve``: none of the caller's SECURECHAT_*
    variables, then the node's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update({
        "SECURECHAT_DATABASE_URL": database_url,
        "SECURECHAT_REDIS_URL": redis_url,
        "SECURECHAT_MASTER_KEY": base64.b64encode(master_key).decode(),
        "SECURECHAT_PUBLIC_URL": ORIGIN,
        "SECURECHAT_ALLOWED_ORIGINS": ORIGIN,
    })
    env.update({f"SECURECHAT_{k.upper()}": v for k, v in extra.items()})
    return env


class ServeProcess:
    """``python -m server serve --port P`` with its log read line by line."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None
        self._changed = asyncio.Condition()
        self._ended = False

    async def start(self, timeout: float = 30.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), env=self.env, cwd=repo_root(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read_log())
        await self.wait_log("Application startup complete", timeout)

    async def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                async with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip())
                    self._changed.notify_all()
        finally:
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    async def wait_log(self, text: str, timeout: float, start: int = 0) -> str:
        """The first log line from index ``start`` on that contains ``text``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for line in self.lines[start:]:
                        if text in line:
                            return line
                    if self._ended:
                        raise AssertionError(f"node {self.name} exited before logging "
                                             f"{text!r}:\n" + "\n".join(self.lines[-30:]))
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"node {self.name} did not log {text!r} in {timeout}s:\n"
                                 + "\n".join(self.lines[-30:])) from None

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL if it does not end in ``timeout``."""
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
            await self._pump
        return self.process.returncode


@contextlib.asynccontextmanager
async def serve_processes(*envs: tuple[str, dict[str, str]]
                          ) -> AsyncIterator[list[ServeProcess]]:
    nodes = [ServeProcess(name, env) for name, env in envs]
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
               every: float = 0.05) -> None:
    """Ask ``check`` until it says yes, for at most ``timeout`` seconds (waiting on
    another process's state, which sends nothing when it changes)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)


async def login_cookie(url: str, email: str, password: str = PASSWORD) -> str:
    """Sign a staff member in over HTTP; the session cookie as a ``cookie`` header."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/api/auth/login",
                                     json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def readiness(url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        response = await client.get("/readyz")
        return response.status_code, response.json()
