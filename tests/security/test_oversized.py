"""Oversized input: HTTP bodies over 64 KiB are 413 ``payload_too_large`` (a declared
length is refused before the body is read, a chunked one as soon as it passes the limit);
a WebSocket message over 64 KiB closes 1009, in one frame or in fragments; a body over
10,000 characters is a clear ``invalid_frame``; nothing already acknowledged is lost."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from server.clock import FakeClock
from server.protocol import MAX_BODY_CHARS
from server.web.http import MAX_JSON_BODY
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic
from tests.patient.support import link_row, new_link, run_node
from tests.realtime.wsclient import connect, staff_cookie
from tests.security.state import snapshot, sqlite_only

MAX_FRAME = 64 * 1024  # docs/protocol.md: a frame over 64 KiB closes with 1009


async def raw_request(url: str, head: str, chunks: list[bytes]) -> bytes:
    """Send a request's head and then ``chunks`` over a plain socket; return the first
    response bytes the server sends (it may answer before the body is complete)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


def status_of(response_head: bytes) -> int:
    return int(response_head.split(b" ", 2)[1])


@sqlite_only
async def test_http_bodies_over_the_limit_are_413(database_url: str, master_key: bytes,
                                                  clock: FakeClock) -> None:
    """A declared 10 MB body is refused with nothing of it sent; a chunked body (no
    length) is refused once past 64 KiB; a form to the verification page as well, with
    no failed try counted; the account is unchanged. 64 KiB itself is read (422: it is
    not valid JSON), so the limit is exactly there."""
    async with run_node(database_url, master_key, clock) as node:
        clinic = await make_clinic(node.services)
        async with node.login(clinic.staff_email) as client:
            before = await snapshot(node.services, clinic.account_id)
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            head = (f"POST /api/patients HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ORIGIN}\r\n"
                    f"Cookie: {cookie}\r\nContent-Type: application/json\r\n")
            declared = await raw_request(node.url, head + "Content-Length: 10000000\r\n\r\n", [])
            assert status_of(declared) == 413
            chunk = b"a" * 16 * 1024
            chunked = await raw_request(node.url, head + "Transfer-Encoding: chunked\r\n\r\n",
                                        [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 5)
            assert status_of(chunked) == 413
            at_limit = await client.post("/api/patients", content=b" " * MAX_JSON_BODY,
                                         headers={"origin": ORIGIN,
                                                  "content-type": "application/json"})
            assert at_limit.status_code == 422
            over = await client.post("/api/patients", content=b" " * (MAX_JSON_BODY + 1),
                                     headers={"origin": ORIGIN,
                                              "content-type": "application/json"})
            assert over.status_code == 413
            assert over.json()["error"]["code"] == "payload_too_large"
            assert await snapshot(node.services, clinic.account_id) == before

            link = await new_link(node, clinic)
            form = await client.post(f"/s/{link}/verify", headers={"origin": ORIGIN},
                                     data={"date_of_birth": "1999-01-01",
                                           "padding": "x" * MAX_JSON_BODY})
            assert form.status_code == 413
            assert (await link_row(node, link))["failures"] == 0


@sqlite_only
async def test_websocket_messages_over_64_kib_close_1009(server: RunningServer,
                                                         clinic: Clinic) -> None:
    """64 KiB + 1 in one frame, and one message sent as 32 KiB fragments, each close the
    socket with 1009; a 10,001-character body is ``invalid_frame`` naming the field,
    with the socket open; the message acknowledged before is still in the thread."""
    cookie = await staff_cookie(server, clinic.staff_email)
    conversation = clinic.conversation_id
    async with connect(server.url, cookie, max_size=None) as ws:
        await ws.wait_type("ready")
        await ws.send(type="send", conversation_id=conversation, client_msg_id="kept",
                      body="Your appointment is confirmed", secure=True)
        await ws.wait_type("ack", client_msg_id="kept")
        await ws.send(type="send", conversation_id=conversation, client_msg_id="long",
                      body="a" * (MAX_BODY_CHARS + 1), secure=True)
        error = await ws.wait_type("error", client_msg_id="long")
        assert error["code"] == "invalid_frame" and "body" in error["message"]
        await ws.send(type="ping", ref="alive")
        await ws.wait_type("pong", ref="alive")
        frame = '{"type":"ping","ref":"' + "a" * (MAX_FRAME + 1 - 24) + '"}'
        assert len(frame.encode()) == MAX_FRAME + 1
        await ws.ws.send(frame)
        assert (await ws.close_code(timeout=10))[0] == 1009
    async with connect(server.url, cookie, max_size=None) as ws:
        await ws.wait_type("ready")
        await ws.ws.send(['{"type":"ping","ref":"', "a" * 32 * 1024, "a" * 32 * 1024,
                          '"}'])
        assert (await ws.close_code(timeout=10))[0] == 1009
    async with connect(server.url, cookie) as ws:
        await ws.send(type="subscribe", conversation_id=conversation, ref="s")
        await ws.wait_type("subscribed", ref="s")
        assert [m["client_msg_id"] for m in ws.of_type("message")] == ["kept"]
