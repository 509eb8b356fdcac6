"""Acceptance 5: a client that stops reading is closed with 4408 and never slows the
others (docs/protocol.md, "Limits")."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
import websockets

from server.clock import FakeClock
from server.settings import Settings
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic, settings_for_tests
from tests.realtime.wsclient import connect, patient_cookie, serve, staff_cookie, ws_url

BODY = "x" * 9_000  # ~9 KB message frames
MESSAGES = 300  # ~2.8 MB per subscriber: far past a 16 KiB buffer and 50 queued frames
SMALL_BUFFER = 16 * 1024


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, ws_outbox_frames=50,
                              ws_rate_per_second=1000, ws_rate_burst=1000)


async def _small_buffer_socket(url: str) -> socket.socket:
    """A connected client socket with a small receive buffer (the server side has a small
    send buffer too), so a reader that stops backs the server up after a few dozen
    frames rather than after the many MB the kernel would otherwise absorb."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return sock


async def test_stalled_reader_closed_4408_others_get_everything(
        settings: Settings, master_key: bytes, clock: FakeClock) -> None:
    """A stalled reader is closed 4408; the other subscriber gets every seq once."""
    async with serve(settings, master_key, clock, send_buffer=SMALL_BUFFER) as (server, _):
        clinic = await make_clinic(server.services)
        conversation = clinic.conversation_id
        staff = await staff_cookie(server, clinic.staff_email)
        sock = await _small_buffer_socket(server.url)
        async with connect(server.url, staff) as sender, connect(server.url, staff) as fast, \
                websockets.connect(
                    ws_url(server.url), origin=ORIGIN, sock=sock, max_queue=1,
                    additional_headers={
                        "cookie": await patient_cookie(server.services, clinic)}) as slow:
            assert json.loads(await slow.recv())["type"] == "ready"
            await slow.send(json.dumps({"type": "subscribe", "conversation_id": conversation,
                                        "ref": "slow"}))
            assert json.loads(await slow.recv())["type"] == "subscribed"
            await fast.send(type="subscribe", conversation_id=conversation, ref="fast")
            await fast.wait_type("subscribed", ref="fast")
            # From here on the slow client reads nothing until every message is out.

            for i in range(1, MESSAGES + 1):
                await sender.send(type="send", conversation_id=conversation,
                                  client_msg_id=f"m{i}", body=BODY, secure=True, ref=f"r{i}")
            await sender.wait_type("ack", ref=f"r{MESSAGES}", timeout=30)
            await fast.wait_type("message", seq=MESSAGES, timeout=10)
            assert [f["seq"] for f in fast.of_type("message")] == list(range(1, MESSAGES + 1))
            assert not fast.closed.done()
            assert [f for f in sender.of_type("error")] == []

            got: list[int] = []
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        frame = json.loads(await slow.recv())
                        if frame["type"] == "message":
                            got.append(frame["seq"])
            assert slow.close_code == 4408
            # What it did get is a clean prefix of the stream: in order, nothing twice.
            assert got == list(range(1, len(got) + 1))
            assert len(got) < MESSAGES


async def test_status_burst_does_not_close_a_reader_that_keeps_up(
        server: RunningServer, clinic: Clinic) -> None:
    """A burst of 160 status frames does not overflow a socket that keeps reading."""
    conversation = clinic.conversation_id
    count = 80
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff:
        await staff.send(type="subscribe", conversation_id=conversation, ref="s")
        await staff.wait_type("subscribed", ref="s")
        for i in range(1, count + 1):
            await staff.send(type="send", conversation_id=conversation, client_msg_id=f"m{i}",
                             body=f"note {i}", secure=True, ref=f"r{i}")
        await staff.wait_type("ack", ref=f"r{count}")
        await staff.wait_type("message", seq=count)
        ids = {f["id"] for f in staff.of_type("message")}
        async with connect(server.url, await patient_cookie(server.services, clinic)) as patient:
            await patient.send(type="subscribe", conversation_id=conversation, ref="p")
            await patient.wait_type("subscribed", ref="p")
            await staff.wait_for(lambda _: {f["message_id"] for f in staff.of_type("status")
                                            if f["status"] == "delivered"} == ids)
            await patient.send(type="read", conversation_id=conversation, seq=count)
            await staff.wait_for(lambda _: {f["message_id"] for f in staff.of_type("status")
                                            if f["status"] == "read"} == ids)
        assert not staff.closed.done()
