"""A small test client over a real WebSocket: it reads every frame into a list, so a
test waits for the frame it wants (with a timeout) without losing the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from server.audit import SYSTEM
from server.runtime import Services
from server.web.context import app_runtime
from tests.conftest import ORIGIN, Clinic, RunningServer

Frame = dict[str, Any]


class WSClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self._arrived = asyncio.Condition()
        self.closed: asyncio.Future[tuple[int | None, str]] = \
            asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait_for(self, match: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first received frame (old or new) that ``match`` accepts."""
        async with asyncio.timeout(timeout), self._arrived:
            while True:
                for frame in self.frames:
                    if match(frame):
                        return frame
                if self.closed.done():
                    raise AssertionError(f"socket closed {self.closed.result()} before a match")
                await self._arrived.wait()

    async def wait_type(self, kind: str, timeout: float = 5.0, **fields: Any) -> Frame:
        return await self.wait_for(
            lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout)

    def of_type(self, kind: str) -> list[Frame]:
        return [f for f in self.frames if f["type"] == kind]

    async def close_code(self, timeout: float = 15.0) -> tuple[int | None, str]:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.closed)

    async def aclose(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def ws_url(server_url: str) -> str:
    return server_url.replace("http://", "ws://", 1) + "/ws"


@contextlib.asynccontextmanager
async def connect(server_url: str, cookie: str | None, *, origin: str | None = ORIGIN,
                  **kw: Any) -> AsyncIterator[WSClient]:
    headers = {"cookie": cookie} if cookie else {}
    async with websockets.connect(ws_url(server_url), origin=origin,
                                  additional_headers=headers, **kw) as ws:
        client = WSClient(ws)
        try:
            yield client
        finally:
            await client.aclose()


async def staff_cookie(server: RunningServer, email: str) -> str:
    async with server.login(email) as client:
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def patient_cookie(services: Services, clinic: Clinic) -> str:
    token, _ = await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    return f"sc_patient={token}"


@contextlib.asynccontextmanager
async def serve(settings: Any, master_key: bytes, clock: Any, *,
                send_buffer: int | None = None) -> AsyncIterator[tuple[RunningServer, Any]]:
    """A node of its own under real uvicorn (as conftest's ``server``), for tests that
    stop it themselves or need a small kernel send buffer (accepted sockets inherit
    ``SO_SNDBUF`` from the listening one). Yields the server and uvicorn's handle."""
    from server.app import create_app
    from tests.serving import listening_socket, serve_app

    app = create_app(settings, master_key, clock=clock)
    sock = listening_socket(send_buffer=send_buffer)
    try:
        async with serve_app(app, sock=sock) as served:
            yield RunningServer(served.url, app_runtime(app).services), served.uvicorn
    finally:
        sock.close()
