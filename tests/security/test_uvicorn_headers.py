"""uvicorn's own answers carry the security headers (issue 13): a request its parser
refuses and a WebSocket upgrade it refuses never reach the app, so the edge middleware
cannot add them; ``securechat serve`` runs uvicorn with protocols that do
(server/web/protocols.py).

Sent over a raw socket to a real ``securechat serve`` process. Before the fix these
answers were a bare ``400`` with a content type and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loadtest.nodes import ServeProcess, node_env
from tests.patient.test_session import assert_patient_headers

WAIT = 10.0
EXPECTED = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "referrer-policy": "no-referrer", "cache-control": "no-store"}


@pytest.fixture
async def node(postgresql_url: str, master_key: bytes) -> AsyncIterator[ServeProcess]:
    process = ServeProcess("uvicorn-400", node_env(database_url=postgresql_url,
                                                   master_key=master_key))
    try:
        await process.start()
        yield process
    finally:
        await process.stop()


async def raw_exchange(node: ServeProcess, request: bytes) -> tuple[int, dict[str, str]]:
    """Send ``request`` bytes as they are; the status and headers of the answer (read
    until the server closes the connection, as it does after each of these)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            answer = await reader.read()
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def check(headers: dict[str, str], what: str) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    csp = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp, what


@pytest.mark.parametrize("request_bytes", [
    b"NOT AN HTTP REQUEST\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
], ids=["garbage", "bad-header", "bad-length"])
async def test_a_malformed_request_gets_a_400_with_the_headers(
        node: ServeProcess, request_bytes: bytes) -> None:
    status, headers = await raw_exchange(node, request_bytes)
    assert status == 400
    check(headers, repr(request_bytes))


@pytest.mark.parametrize("request_bytes", [
    # An upgrade without Sec-WebSocket-Key: websockets refuses the handshake itself.
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    # A bad version: refused by websockets too (426 is not used: uvicorn answers 400).
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 99\r\n\r\n",
], ids=["no-key", "bad-version"])
async def test_a_refused_websocket_upgrade_has_the_headers(
        node: ServeProcess, request_bytes: bytes) -> None:
    status, headers = await raw_exchange(node, request_bytes)
    assert 400 <= status < 500
    check(headers, repr(request_bytes))


def test_the_expected_headers_match_the_app_s() -> None:
    """The set checked here is the one every app response carries (no drift)."""
    from server.web.http import SECURITY_HEADERS
    names = {name.decode() for name, _ in SECURITY_HEADERS}
    assert set(EXPECTED) | {"content-security-policy"} == names
    assert callable(assert_patient_headers)
