"""Lean sockets (docs/performance.md, idle memory): ``/ws`` served by ``ws.Direct``
outside Starlette's middleware and router keeps the endpoint's own security behaviour,
and the upgrade's response is released once the handshake is done."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import InvalidStatus

from server.app import create_app
from server.clock import FakeClock
from server.settings import Settings
from server.web import ws
from server.web.context import app_runtime
from tests.conftest import RunningServer
from tests.realtime.wsclient import connect, patient_cookie, staff_cookie
from tests.serving import Served, serve_app


@pytest.fixture
async def direct(settings: Settings, master_key: bytes, clock: FakeClock
                 ) -> AsyncIterator[tuple[RunningServer, Served]]:
    app = ws.Direct(create_app(settings, master_key, clock=clock))
    async with serve_app(app) as served:
        yield RunningServer(served.url, app_runtime(app).services), served


def _socket_protocols(served: Served) -> list:
    return [p for p in served.uvicorn.server_state.connections
            if type(p).__name__ == "WebSocketsSansIOProtocol"]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
async def test_bad_origin_still_refused_before_upgrade(direct, clinic, origin) -> None:
    server, _ = direct
    cookie = await staff_cookie(server, clinic.staff_email)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.url, cookie, origin=origin):
            pass
    assert refused.value.response.status_code == 403


async def test_no_session_still_closed_4401(direct) -> None:
    server, _ = direct
    async with connect(server.url, "sc_staff=not-a-session") as sock:
        assert (await sock.close_code(timeout=5))[0] == 4401
        assert sock.frames == []


async def test_sockets_work_and_hold_no_upgrade_response(direct, clinic) -> None:
    server, served = direct
    staff = await staff_cookie(server, clinic.staff_email)
    async with connect(server.url, staff) as nurse, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        ready = await nurse.wait_type("ready")
        assert ready["account"]["clinic_name"].startswith("Clinic ")
        await patient.wait_type("ready")
        for sock in (nurse, patient):
            await sock.send(type="subscribe", conversation_id=clinic.conversation_id,
                            after_seq=0, ref="s")
            await sock.wait_type("subscribed", ref="s")
        await patient.send(type="send", conversation_id=clinic.conversation_id, body="hi",
                           client_msg_id="m1", ref="m")
        await patient.wait_type("ack", ref="m")
        assert (await nurse.wait_type("message"))["body"] == "hi"
        protocols = _socket_protocols(served)
        assert len(protocols) == 2
        # If a uvicorn upgrade renames these, _release_handshake silently stops working:
        # this is where that shows.
        assert all(p.handshake_complete and p.response is None and p.request is None
                   for p in protocols)
    async with server.client() as client:  # HTTP still goes through the whole app
        response = await client.get("/healthz")
        assert response.status_code == 200 and "x-request-id" in response.headers
