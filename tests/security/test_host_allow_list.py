"""DNS rebinding (issue 13): a page on evil.example whose name is made to resolve to the
node reaches it same-origin as far as the browser knows, but its requests say
``Host: evil.example``. Every route and the WebSocket handshake refuse a Host that is
not the service's (HTTP 400, with the security headers); PUBLIC_URL's host, the allowed
origins', ALLOWED_HOSTS and the loopback names are accepted.

Before the fix any Host was served: ``/dev/phone`` (every SMS the demo sent, links
included) and the API answered the rebinding page.
"""

from __future__ import annotations

import asyncio
import base64
import os

import httpx
import pytest

from server.clock import FakeClock
from tests.conftest import PASSWORD, make_clinic
from tests.patient.support import Node, run_node
from tests.security.state import sqlite_only

PUBLIC_HOST = "chat.clinic.test"
EXTRA_HOST = "node1.internal"
EVIL = ["evil.example", f"{PUBLIC_HOST}.evil.example", "evil.example:80", "",
        "[::2]", f"{PUBLIC_HOST}:x", "127.0.0.1.evil.example"]


def assert_refused(response: httpx.Response, what: str) -> None:
    assert response.status_code == 400, f"{what}: {response.status_code}"
    assert response.json()["error"]["code"] == "invalid_request", what
    assert response.headers.get("x-frame-options") == "DENY", what
    assert "form-action 'self'" in response.headers.get("content-security-policy", ""), what


async def ws_handshake(node: Node, host: str, cookie: str) -> tuple[int, dict[str, str]]:
    """A browser-like upgrade to /ws with ``Host: host`` and the node's own Origin."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: {node.url}\r\nCookie: {cookie}\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(request.encode())
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


@sqlite_only
async def test_a_foreign_host_is_refused_everywhere(database_url: str, master_key: bytes,
                                                    clock: FakeClock) -> None:
    async with run_node(database_url, master_key, clock, demo=True,
                        public_url=f"http://{PUBLIC_HOST}",
                        allowed_hosts=[EXTRA_HOST]) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        login = await client.post("/api/auth/login", json={"email": clinic.staff_email,
                                                           "password": PASSWORD})
        assert login.status_code == 200
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())

        for host in EVIL:
            for method, path in (("GET", "/dev/phone"), ("GET", "/api/me"),
                                 ("GET", "/api/conversations"), ("GET", "/"),
                                 ("POST", "/api/auth/login"), ("GET", "/healthz")):
                response = await client.request(method, path, headers={"host": host})
                assert_refused(response, f"{method} {path} Host {host!r}")
            status, headers = await ws_handshake(node, host, cookie)
            assert status == 400, f"/ws Host {host!r}: {status}"
            assert headers.get("x-frame-options") == "DENY"

        # The service's own names still work, on any port (rebinding is about the name).
        for host in (PUBLIC_HOST, f"{PUBLIC_HOST}:443", EXTRA_HOST, f"{EXTRA_HOST}:8000",
                     "LOCALHOST:1234",
                     f"127.0.0.1:{node.port}", "[::1]"):
            response = await client.get("/api/me", headers={"host": host})
            assert response.status_code == 200, f"Host {host}: {response.status_code}"
        assert (await client.get("/dev/phone")).status_code == 200
        status, _ = await ws_handshake(node, f"127.0.0.1:{node.port}", cookie)
        assert status == 101


@pytest.mark.parametrize("value", ["http://evil.example", "evil.example/path", "a b"])
def test_allowed_hosts_must_be_host_names(value: str) -> None:
    from server.settings import SettingsError, from_env
    with pytest.raises(SettingsError, match="ALLOWED_HOSTS"):
        from_env({"SECURECHAT_ALLOWED_HOSTS": value})
