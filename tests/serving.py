"""Run an ASGI app under real uvicorn on a real socket, on the test's own event loop.

The one way every test starts a server (the app's own nodes, a fake Twilio), so start-up
and shutdown are waited on the same way everywhere: no polling, no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass
class Served:
    url: str
    port: int
    uvicorn: uvicorn.Server
    task: asyncio.Task

    async def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown, as on SIGTERM (idempotent)."""
        self.uvicorn.should_exit = True
        async with asyncio.timeout(timeout):
            await asyncio.shield(self.task)


def listening_socket(port: int = 0, send_buffer: int | None = None) -> socket.socket:
    """Bound and listening before uvicorn starts, so clients may connect at once.
    ``send_buffer`` sets SO_SNDBUF, which accepted sockets inherit."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, sock: socket.socket | None = None, lifespan: str = "on",
                    startup_timeout: float = 15.0) -> AsyncIterator[Served]:
    """Serve ``app`` (with the production WebSocket settings) until the block ends.

    Raises:
        RuntimeError: the app's lifespan start-up failed.
    """
    started = asyncio.Event()
    outcome: list[str] = []

    async def reporting(scope, receive, send):
        async def send_and_report(message):
            await send(message)
            if message["type"].startswith("lifespan.startup."):
                outcome.append(message["type"])
                started.set()
        await app(scope, receive, send_and_report if scope["type"] == "lifespan" else send)

    own_socket = sock is None
    sock = sock or listening_socket()
    server = uvicorn.Server(uvicorn.Config(
        reporting if lifespan == "on" else app, lifespan=lifespan, log_config=None,
        access_log=False, ws="websockets-sansio", ws_per_message_deflate=False,
        ws_max_size=64 * 1024))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    port = sock.getsockname()[1]
    served = Served(f"http://127.0.0.1:{port}", port, server, task)
    try:
        if lifespan == "on":
            async with asyncio.timeout(startup_timeout):
                await started.wait()
            if outcome != ["lifespan.startup.complete"]:
                raise RuntimeError("the app failed to start")
        yield served
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task
        if own_socket:
            sock.close()
