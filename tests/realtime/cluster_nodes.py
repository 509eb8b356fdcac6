"""Nodes for the cluster tests: several apps under real uvicorn in the test's process
(each with its own broker), or ``securechat serve`` as separate OS processes (started by
the shared ``loadtest/nodes.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from loadtest import nodes
from loadtest.nodes import ServeProcess, free_port, poll, readiness  # noqa: F401 - re-exported
from server.app import create_app
from server.brokers.base import Broker
from server.clock import Clock
from server.settings import Settings
from server.web.context import app_runtime
from tests.conftest import CHEAP_HASHING, ORIGIN, PASSWORD, RunningServer
from tests.serving import serve_app


class Node(RunningServer):
    """A running in-process node: its URL, services and real-time node."""

    def __init__(self, url: str, app: Any, uv: uvicorn.Server, task: asyncio.Task) -> None:
        super().__init__(url, app_runtime(app).services)
        self.app = app
        self._uv = uv
        self._task = task

    @property
    def realtime(self):
        return app_runtime(self.app).node

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


# --- nodes as processes: the shared module, with this suite's origin -------------------

def node_env(*, database_url: str, redis_url: str, master_key: bytes,
             **extra: str) -> dict[str, str]:
    """``loadtest.nodes.node_env`` for the tests' origin, at the tests' argon2 cost."""
    return nodes.node_env(database_url=database_url, redis_url=redis_url,
                          master_key=master_key, origin=ORIGIN, settings=CHEAP_HASHING,
                          **extra)


@contextlib.asynccontextmanager
async def serve_processes(*envs: tuple[str, dict[str, str]]
                          ) -> AsyncIterator[list[ServeProcess]]:
    async with nodes.running(*(ServeProcess(name, env) for name, env in envs)) as started:
        yield list(started)


async def login_cookie(url: str, email: str, password: str = PASSWORD) -> str:
    """Sign a staff member in over HTTP; the session cookie as a ``cookie`` header."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/api/auth/login",
                                     json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())
