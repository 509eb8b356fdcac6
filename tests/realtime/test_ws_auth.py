"""Who may open a socket and what it may reach (issue 3, acceptance 3): the Origin check
before the upgrade, sessions (none, ended, idle) and tenant and patient isolation."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import CreatePatientRequest
from server.settings import Settings
from server.store import sessions as session_store
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic, settings_for_tests
from tests.realtime.wsclient import WSClient, connect, patient_cookie, staff_cookie


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, ws_session_check_seconds=0.2)


@pytest.fixture
async def canary(services) -> Clinic:
    """A clinic of its own whose patient sockets serve as session-check canaries."""
    return await make_clinic(services)


async def session_check_passed(server: RunningServer, clock: FakeClock,
                               canary: Clinic) -> None:
    """Return once the hub has run a full session check that began after this call.

    A canary patient socket is opened, its session is ended directly in the store (no
    logout event), and only a session check can close it; that check listed the
    sessions after the canary attached, so it read the clock after this call began.
    """
    token, principal = await server.services.patient_sessions.open(
        canary.account_id, canary.patient_id, canary.conversation_id, SYSTEM)
    async with connect(server.url, f"sc_patient={token}") as ws:
        await ws.wait_type("ready")
        async with server.services.db.write() as conn:
            await session_store.end_session(conn, principal.session_id, clock.now())
        assert (await ws.close_code(timeout=5))[0] == 4401


async def still_open(ws: WSClient, ref: str) -> None:
    await ws.send(type="ping", ref=ref)
    await ws.wait_type("pong", ref=ref)
    assert not ws.closed.done()


# --- the handshake -----------------------------------------------------------------------

@pytest.mark.parametrize("origin", ["http://evil.example", "null", None,
                                    "http://testserver.local:8080", "https://testserver.local"])
async def test_bad_origin_refused_before_upgrade(server: RunningServer, clinic: Clinic,
                                                 origin: str | None) -> None:
    """A foreign, null, missing or near-miss Origin gets HTTP 403, no upgrade."""
    cookie = await staff_cookie(server, clinic.staff_email)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.url, cookie, origin=origin):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("cookie", [None, "sc_staff=not-a-session",
                                    "sc_patient=not-a-session"])
async def test_no_session_accepted_then_closed_4401(server: RunningServer,
                                                    cookie: str | None) -> None:
    """Without a live session the socket is upgraded, sent nothing, closed 4401."""
    async with connect(server.url, cookie) as ws:
        code, _ = await ws.close_code(timeout=5)
        assert code == 4401
        assert ws.frames == []


async def test_logout_closes_that_sessions_socket(server: RunningServer,
                                                  clinic: Clinic) -> None:
    """Logout closes that session's socket 4401 within 1 s; other sessions stay."""
    other = await staff_cookie(server, clinic.staff_email)
    async with server.login(clinic.staff_email) as http:
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        async with connect(server.url, cookie) as ws, connect(server.url, other) as kept:
            await ws.wait_type("ready")
            await kept.wait_type("ready")
            response = await http.post("/api/auth/logout")
            assert response.status_code == 204
            assert (await ws.close_code(timeout=1.0))[0] == 4401
            await still_open(kept, "kept")
        # The cookie no longer opens a socket either.
        async with connect(server.url, cookie) as again:
            assert (await again.close_code(timeout=5))[0] == 4401
            assert again.frames == []


# --- reach -------------------------------------------------------------------------------

async def test_patient_cannot_reach_another_conversation(server: RunningServer,
                                                         clinic: Clinic) -> None:
    """A patient naming another conversation gets `forbidden`; nothing stored."""
    services = server.services
    _, neighbour = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Neighbour", "+14155550123", "1990-01-01"),
        SYSTEM)
    foreign = (await make_clinic(services)).conversation_id
    async with connect(server.url, await patient_cookie(services, clinic)) as patient, \
            connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff:
        await patient.wait_type("ready")
        await staff.send(type="subscribe", conversation_id=neighbour, ref="watch")
        await staff.wait_type("subscribed", ref="watch")
        for target in (neighbour, foreign):
            attempts = [
                {"type": "subscribe", "conversation_id": target},
                {"type": "send", "conversation_id": target, "client_msg_id": "evil",
                 "body": "hi", "secure": True},
                {"type": "typing", "conversation_id": target},
                {"type": "read", "conversation_id": target, "seq": 1},
            ]
            for i, frame in enumerate(attempts):
                ref = f"{target[:8]}-{i}"
                await patient.send(**frame, ref=ref)
                error = await patient.wait_type("error", ref=ref)
                assert error["code"] == "forbidden", error
                if frame["type"] == "send":
                    assert error["client_msg_id"] == "evil"
        # Its own conversation still works, so the socket was not closed.
        await patient.send(type="subscribe", conversation_id=clinic.conversation_id, ref="own")
        await patient.wait_type("subscribed", ref="own")
        assert [f for f in patient.frames if f["type"] == "message"] == []
        await still_open(staff, "after")
    positions = await services.streams.positions([neighbour, foreign])
    assert positions == {neighbour: 0, foreign: 0}
    # The staff member watching the neighbour's thread saw no typing, read or message.
    assert {f["type"] for f in staff.frames} <= {"ready", "subscribed", "presence", "pong"}


async def test_staff_cannot_reach_another_account(server: RunningServer,
                                                  clinic: Clinic) -> None:
    """Staff naming another account's conversation get `not_found`."""
    other = await make_clinic(server.services)
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        for target in (other.conversation_id, "no-such-conversation"):
            for i, frame in enumerate([
                {"type": "subscribe", "conversation_id": target, "after_seq": 0},
                {"type": "send", "conversation_id": target, "client_msg_id": f"x-{target[:6]}",
                 "body": "hello", "secure": True},
                {"type": "typing", "conversation_id": target},
                {"type": "read", "conversation_id": target, "seq": 1},
            ]):
                ref = f"{target[:6]}-{i}"
                await ws.send(**frame, ref=ref)
                error = await ws.wait_type("error", ref=ref)
                assert error["code"] == "not_found", error
        assert ws.of_type("message") == [] and ws.of_type("subscribed") == []
    assert await server.services.streams.positions([other.conversation_id]) == {
        other.conversation_id: 0}


async def test_no_frame_crosses_accounts(server: RunningServer, clinic: Clinic) -> None:
    """Staff of account A receive no frame of account B's traffic."""
    b = await make_clinic(server.services)
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as a_staff:
        await a_staff.send(type="subscribe", conversation_id=clinic.conversation_id, ref="a")
        await a_staff.wait_type("subscribed", ref="a")
        conv = b.conversation_id
        async with connect(server.url, await staff_cookie(server, b.staff_email)) as b_staff:
            async with connect(server.url,
                               await patient_cookie(server.services, b)) as b_patient:
                for ws in (b_staff, b_patient):
                    await ws.send(type="subscribe", conversation_id=conv, ref="s")
                    await ws.wait_type("subscribed", ref="s")
                await b_patient.send(type="typing", conversation_id=conv)
                await b_staff.wait_type("typing")
                await b_staff.send(type="send", conversation_id=conv, client_msg_id="b1",
                                   body="from b staff", secure=True)
                await b_patient.wait_type("message", seq=1)
                await b_patient.send(type="read", conversation_id=conv, seq=1)
                await b_patient.send(type="send", conversation_id=conv, client_msg_id="b2",
                                     body="from b patient")
                await b_staff.wait_type("message", seq=2)
                await b_staff.wait_type("conversation", last_seq=2)
                await b_staff.wait_type("read", seq=1)
                await b_staff.wait_type("status", status="read")
            # B's staff saw the patient leave, so every B event was dispatched by now
            # (and anything for A was queued before this ping's answer).
            await b_staff.wait_type("presence", patient_online=False)
        await a_staff.send(type="ping", ref="flush")
        await a_staff.wait_type("pong", ref="flush")
    leaked = [f for f in a_staff.frames
              if b.conversation_id in json.dumps(f) or b.patient_id in json.dumps(f)]
    assert leaked == []
    assert {f["type"] for f in a_staff.frames} <= {"ready", "subscribed", "presence", "pong"}


# --- sessions over time ------------------------------------------------------------------

async def test_idle_limit_closes_sockets_4401(server: RunningServer, clinic: Clinic,
                                              clock: FakeClock) -> None:
    """15 idle minutes close staff and patient sockets with 4401."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        await staff.wait_type("ready")
        await patient.wait_type("ready")
        clock.advance(minutes=16)
        assert (await staff.close_code(timeout=5))[0] == 4401
        assert (await patient.close_code(timeout=5))[0] == 4401


async def test_pings_do_not_keep_a_session_alive(server: RunningServer, clinic: Clinic,
                                                 clock: FakeClock, canary: Clinic) -> None:
    """Pings are not user action: the idle limit still closes the socket."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.wait_type("ready")
        clock.advance(minutes=10)
        for i in range(3):
            await still_open(ws, f"p{i}")
        await session_check_passed(server, clock, canary)
        assert not ws.closed.done()
        clock.advance(minutes=6)
        assert (await ws.close_code(timeout=5))[0] == 4401


async def test_send_keeps_a_session_alive(server: RunningServer, clinic: Clinic,
                                          clock: FakeClock, canary: Clinic) -> None:
    """A `send` is user action: it restarts the idle limit."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.wait_type("ready")
        clock.advance(minutes=10)
        await ws.send(type="send", conversation_id=conversation, client_msg_id="keep",
                      body="still here", secure=True, ref="s")
        await ws.wait_type("ack", ref="s")
        await session_check_passed(server, clock, canary)  # the activity is recorded
        clock.advance(minutes=10)
        await session_check_passed(server, clock, canary)
        await still_open(ws, "alive")
        clock.advance(minutes=16)
        assert (await ws.close_code(timeout=5))[0] == 4401
