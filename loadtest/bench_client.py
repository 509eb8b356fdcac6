"""A lean WebSocket client for the benchmark: websockets' sans-I/O ``ClientProtocol``
under a plain ``asyncio.Protocol``.

The benchmark's generator shares a 2-core machine with the server, so it must cost far
less per frame than the server does. The asyncio ``websockets.connect`` client creates
futures and queue entries for every frame; here a frame is parsed by the sans-I/O core
(masking in its C speedups) and handed to a callback, with no task or future per frame.
Pings are answered by the protocol core itself, so idle sockets survive uvicorn's
keepalive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import msgspec
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Origin
from websockets.uri import parse_uri


class ServerFrame(msgspec.Struct, frozen=True):
    """The fields of a server frame the benchmark looks at (the rest are skipped)."""

    type: str
    client_msg_id: str | None = None
    seq: int | None = None
    conversation_id: str | None = None
    last_seq: int | None = None
    ref: str | None = None
    code: str | None = None
    retry_after_ms: int | None = None


decode_frame = msgspec.json.Decoder(ServerFrame).decode
encode_frame = msgspec.json.Encoder().encode

FrameHandler = Callable[["Socket", ServerFrame], None]


class HandshakeFailed(Exception):
    """The socket closed (or was refused) before its ``ready`` frame."""


class Socket(asyncio.Protocol):
    """One connection. ``ready`` resolves with the ``ready`` frame, or fails when the
    handshake or authentication does; ``closed`` resolves with the close code."""

    def __init__(self, url: str, cookie: str, origin: str, on_frame: FrameHandler,
                 tag: Any = None) -> None:
        self.protocol = ClientProtocol(parse_uri(url), origin=Origin(origin),
                                       max_size=1 << 20)
        self.cookie = cookie
        self.on_frame = on_frame
        self.tag = tag  # whatever the caller wants to find again in on_frame
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[ServerFrame] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.frames_in = 0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        request = self.protocol.connect()
        request.headers["Cookie"] = self.cookie
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self.frames_in += 1
                    frame = decode_frame(event.data)
                    if frame.type == "ready" and not self.ready.done():
                        self.ready.set_result(frame)
                    self.on_frame(self, frame)
            elif isinstance(event, Response) and event.status_code != 101:
                self._fail(HandshakeFailed(f"HTTP {event.status_code}"))
        self._flush()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        code = self.protocol.close_code
        self._fail(HandshakeFailed(f"closed before ready (code {code}, {exc!r})"))
        if not self.closed.done():
            self.closed.set_result(code)

    # --- use --------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (self.transport is not None and not self.closed.done()
                and self.protocol.state is State.OPEN)

    def send(self, frame: Any) -> None:
        """Send one frame (a msgspec-encodable object); never waits (the kernel and the
        transport buffer it, as an open-loop generator must)."""
        self.send_raw(encode_frame(frame))

    def send_raw(self, text: bytes) -> None:
        """Send one text frame's UTF-8 bytes (dropped when the socket is not open)."""
        if self.open:
            self.protocol.send_text(text)
            self._flush()

    def close(self) -> None:
        """A clean close handshake."""
        if self.open:
            self.protocol.send_close(1000)
            self._flush()

    def abort(self) -> None:
        """Drop the connection at once (no close handshake): a network failure."""
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:  # the protocol asks for a half-close after a close handshake
                self.transport.close()
                return

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: no "never retrieved" warning


async def connect(url: str, cookie: str, origin: str, on_frame: FrameHandler, *,
                  local_ip: str | None = None, tag: Any = None,
                  timeout: float = 30.0) -> Socket:
    """Open a socket and wait for its ``ready`` frame (an authenticated connection).

    Raises:
        HandshakeFailed, OSError, TimeoutError: it did not become ready.
    """
    wsuri = parse_uri(url)
    loop = asyncio.get_running_loop()
    local = (local_ip, 0) if local_ip else None
    _, sock = await asyncio.wait_for(loop.create_connection(
        lambda: Socket(url, cookie, origin, on_frame, tag), wsuri.host, wsuri.port,
        local_addr=local), timeout)
    try:
        await asyncio.wait_for(asyncio.shield(sock.ready), timeout)
    except BaseException:
        sock.abort()
        raise
    return sock
