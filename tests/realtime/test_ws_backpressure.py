"""Acceptance 5: a client that stops reading is closed with 4408 and never slows the
others (docs/protocol.md, "Limits")."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
import websockets

from server.settings import Settings, from_env
from tests.conftest import ORIGIN, Clinic, RunningServer
from tests.realtime.wsclient import connect, patient_cookie, staff_cookie, ws_url

BODY = "x" * 9_000  # ~9 KB frames fill the kernel buffers in a few hundred messages
MESSAGES = 400


@pytest.fixture
def settings(database_url: str) -> Settings:
    return from_env({}, database_url=database_url, allowed_origins=[ORIGIN],
                    password_hash_concurrency=2, ws_outbox_frames=50,
                    ws_rate_per_second=1000, ws_rate_burst=1000)


async def _small_buffer_socket(url: str) -> socket.socket:
    """A connected client socket with a small receive buffer, so a reader that stops
    makes the server's writes back up after a few hundred KB instead of many MB."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return sock


async def test_stalled_reader_closed_4408_others_get_everything(
        server: RunningServer, clinic: Clinic) -> None:
    """A socket that stops reading is closed with 4408 while another subscriber of the
    same conversation receives every seq once, in order."""
    conversation = clinic.conversation_id
    staff = await staff_cookie(server, clinic.staff_email)
    sock = await _small_buffer_socket(server.url)
    async with connect(server.url, staff) as sender, connect(server.url, staff) as fast, \
            websockets.connect(ws_url(server.url), origin=ORIGIN, sock=sock, max_queue=1,
                               max_size=None, additional_headers={
                                   "cookie": await patient_cookie(server.services, clinic)},
                               ) as slow:
        assert json.loads(await slow.recv())["type"] == "ready"
        await slow.send(json.dumps({"type": "subscribe", "conversation_id": conversation,
                                    "ref": "slow"}))
        assert json.loads(await slow.recv())["type"] == "subscribed"
        await fast.send(type="subscribe", conversation_id=conversation, ref="fast")
        await fast.wait_type("subscribed", ref="fast")
        # From here on the slow client reads nothing.

        for i in range(1, MESSAGES + 1):
            await sender.send(type="send", conversation_id=conversation,
                              client_msg_id=f"m{i}", body=BODY, secure=True, ref=f"r{i}")
        import time; t0 = time.monotonic()
        await sender.wait_type("ack", ref=f"r{MESSAGES}", timeout=60)
        print("acks", time.monotonic() - t0)
        await fast.wait_type("message", seq=MESSAGES, timeout=30)
        assert [f["seq"] for f in fast.of_type("message")] == list(range(1, MESSAGES + 1))

        got: list[int] = []
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    frame = json.loads(await slow.recv())
                    print("slow got", frame.get("type"), frame.get("seq"), time.monotonic() - t0)
                    if frame["type"] == "message":
                        got.append(frame["seq"])
        assert slow.close_code == 4408
        print(len(got))
        # What it did get is a clean prefix of the stream: in order, nothing twice.
        assert got == list(range(1, len(got) + 1))
        assert len(got) < MESSAGES
