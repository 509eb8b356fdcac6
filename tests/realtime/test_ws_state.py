"""Conversation state over the socket: typing, read pointers and statuses, inbox
(`conversation`) updates, delivery marks and presence (docs/protocol.md, "Frames")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.settings import Settings
from tests.conftest import ORIGIN, Clinic, RunningServer, settings_for_tests
from tests.realtime.wsclient import WSClient, connect, patient_cookie, staff_cookie

# SMS go to a Twilio that does not answer, so they stay `queued` (retried later): any
# other status an SMS shows here would have come from the socket side.
DEAD_TWILIO = {"sms_provider": "twilio", "twilio_account_sid": "AC" + "0" * 32,
               "twilio_auth_token": "unused", "twilio_from": "+15005550006",
               "twilio_api_base": "http://127.0.0.1:9"}


@pytest.fixture
def overrides() -> dict[str, Any]:
    return DEAD_TWILIO


@pytest.fixture
def settings(database_url: str, overrides: dict[str, Any]) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, **overrides)


async def subscribed(ws: WSClient, conversation: str, ref: str = "sub",
                     after_seq: int = 0) -> dict[str, Any]:
    await ws.send(type="subscribe", conversation_id=conversation, after_seq=after_seq,
                  ref=ref)
    return await ws.wait_type("subscribed", ref=ref)


async def send(ws: WSClient, conversation: str, cid: str, body: str = "hello",
               secure: bool = True) -> dict[str, Any]:
    await ws.send(type="send", conversation_id=conversation, client_msg_id=cid, body=body,
                  secure=secure, ref=cid)
    return await ws.wait_type("ack", ref=cid)


@contextlib.asynccontextmanager
async def staff_and_patient(server: RunningServer, clinic: Clinic
                            ) -> AsyncIterator[tuple[WSClient, WSClient]]:
    """A staff and a patient socket, both subscribed to the clinic's conversation."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        for ws in (staff, patient):
            await subscribed(ws, clinic.conversation_id)
        yield staff, patient


async def unread(server: RunningServer, email: str, conversation: str) -> int:
    async with server.login(email) as http:
        listed = (await http.get("/api/conversations")).json()["conversations"]
    return next(c["unread"] for c in listed if c["id"] == conversation)


# --- typing ------------------------------------------------------------------------------

async def test_typing_relayed_throttled_and_never_stored(server: RunningServer,
                                                         clinic: Clinic) -> None:
    """Typing is relayed to the other side, once per 2 s, never stored."""
    conversation = clinic.conversation_id
    async with staff_and_patient(server, clinic) as (staff, patient):
        for _ in range(5):
            await patient.send(type="typing", conversation_id=conversation)
        for _ in range(5):
            await staff.send(type="typing", conversation_id=conversation)
        # Typing events and this message go through the same ordered dispatch: once both
        # sides have the message, every typing relay has been made.
        await send(staff, conversation, "barrier")
        await patient.wait_type("message", seq=1)
        await staff.wait_type("message", seq=1)
        assert [f["sender"] for f in staff.of_type("typing")] == [
            {"kind": "patient", "id": clinic.patient_id, "name": "Pat Example"}]
        assert [(f["sender"]["kind"], f["sender"]["id"]) for f in patient.of_type("typing")] \
            == [("staff", clinic.staff_id)]
        assert all(f["conversation_id"] == conversation
                   for f in staff.of_type("typing") + patient.of_type("typing"))
    assert await server.services.streams.positions([conversation]) == {conversation: 1}


# --- read --------------------------------------------------------------------------------

async def test_patient_read_marks_staff_messages_read(server: RunningServer,
                                                      clinic: Clinic) -> None:
    """A patient read marks staff secure messages `read` and is relayed."""
    conversation = clinic.conversation_id
    async with staff_and_patient(server, clinic) as (staff, patient):
        first = await send(staff, conversation, "s1")
        sms = await send(staff, conversation, "s2", secure=False)
        second = await send(staff, conversation, "s3")
        later = await send(staff, conversation, "s4")
        await patient.wait_type("message", seq=4)
        await patient.send(type="read", conversation_id=conversation, seq=3)
        notice = await staff.wait_type("read")
        assert notice["seq"] == 3 and notice["reader"]["kind"] == "patient"
        assert notice["reader"]["id"] == clinic.patient_id
        await staff.wait_for(lambda _: {f["message_id"] for f in staff.of_type("status")
                                        if f["status"] == "read"}
                             == {first["message_id"], second["message_id"]})
        # Barrier: a later message reaches the staff after anything the read caused.
        await patient.send(type="send", conversation_id=conversation, client_msg_id="p",
                           body="ok")
        await staff.wait_type("message", seq=5)
        read_ids = [f["message_id"] for f in staff.of_type("status") if f["status"] == "read"]
        assert sorted(read_ids) == sorted([first["message_id"], second["message_id"]])
        assert sms["message_id"] not in read_ids and later["message_id"] not in read_ids
        assert patient.of_type("read") == []  # not echoed to the reader
    async with server.login(clinic.staff_email) as http:
        history = (await http.get(f"/api/conversations/{conversation}/messages")).json()
    statuses = {m["seq"]: m["status"] for m in history["messages"]}
    assert statuses[1] == statuses[3] == "read"
    assert statuses[2] == "queued" and statuses[4] != "read"


async def test_staff_read_moves_unread_in_inbox_frames_and_api(server: RunningServer,
                                                               clinic: Clinic) -> None:
    """Staff unread rises with inbound and drops to 0 on read (frames and API)."""
    conversation = clinic.conversation_id
    cookie = await staff_cookie(server, clinic.staff_email)
    async with connect(server.url, cookie) as staff, connect(server.url, cookie) as tab, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        for ws in (staff, patient):
            await subscribed(ws, conversation)
        for i in (1, 2):
            await send(patient, conversation, f"p{i}")
            frame = await staff.wait_type("conversation", last_seq=i)
            assert frame["unread"] == i
            assert (await tab.wait_type("conversation", last_seq=i))["unread"] == i
        assert await unread(server, clinic.staff_email, conversation) == 2

        await staff.send(type="read", conversation_id=conversation, seq=2)
        await staff.wait_type("conversation", last_seq=2, unread=0)
        await tab.wait_type("conversation", last_seq=2, unread=0)  # the other tab too
        assert (await patient.wait_type("read"))["reader"] == {
            "kind": "staff", "id": clinic.staff_id, "name": staff.frames[0]["user"]["name"]}
        await patient.wait_for(
            lambda _: len([f for f in patient.of_type("status") if f["status"] == "read"]) == 2)
        assert await unread(server, clinic.staff_email, conversation) == 0
        assert await unread(server, clinic.admin_email, conversation) == 2

        await send(patient, conversation, "p3")
        assert (await staff.wait_type("conversation", last_seq=3))["unread"] == 1
        assert await unread(server, clinic.staff_email, conversation) == 1
        # A late read of an older position never un-reads.
        await staff.send(type="read", conversation_id=conversation, seq=1)
        await staff.wait_type("conversation", last_seq=3, unread=1)
        assert await unread(server, clinic.staff_email, conversation) == 1
        assert patient.of_type("conversation") == []


async def test_read_beyond_the_end_does_not_freeze_the_pointer(
        server: RunningServer, clinic: Clinic) -> None:
    """A read past the end reads to the end only; the pointer keeps moving."""
    conversation = clinic.conversation_id
    async with staff_and_patient(server, clinic) as (staff, patient):
        await send(patient, conversation, "p1")
        await staff.wait_type("message", seq=1)
        await staff.send(type="read", conversation_id=conversation, seq=1_000_000)
        await staff.wait_type("conversation", last_seq=1, unread=0)
        assert (await patient.wait_type("read"))["seq"] == 1  # read to the end, no further
        await send(patient, conversation, "p2")
        assert (await staff.wait_type("conversation", last_seq=2))["unread"] == 1
        await staff.send(type="read", conversation_id=conversation, seq=2)
        await staff.wait_type("conversation", last_seq=2, unread=0)
        assert await unread(server, clinic.staff_email, conversation) == 0


# --- inbox -------------------------------------------------------------------------------

async def test_conversation_frames_reach_all_staff_but_not_the_patient(
        server: RunningServer, clinic: Clinic) -> None:
    """`conversation` frames reach every staff socket, never the patient."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await staff_cookie(server, clinic.admin_email)) as admin, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        await subscribed(staff, conversation)
        await subscribed(patient, conversation)
        await admin.wait_type("ready")  # not subscribed to anything
        await send(patient, conversation, "p1", body="hi")
        await send(staff, conversation, "s1", body="hello")
        for ws in (staff, admin):
            frame = await ws.wait_type("conversation", last_seq=2)
            assert frame["id"] == conversation and frame["unread"] == 1
            assert frame["patient"]["id"] == clinic.patient_id
            assert frame["patient"]["display_name"] == "Pat Example"
            assert frame["patient"]["masked_phone"].endswith("00")
            assert "4155550100" not in frame["patient"]["masked_phone"]
            assert [f["last_seq"] for f in ws.of_type("conversation")] == [1, 2]
        assert admin.of_type("message") == []  # inbox only, not the thread
        await patient.wait_type("message", seq=2)  # pushed after its inbox frames
        assert patient.of_type("conversation") == []


# --- delivery ----------------------------------------------------------------------------

async def test_delivered_when_written_to_the_patient_secure_only(server: RunningServer,
                                                                 clinic: Clinic) -> None:
    """Secure messages become `delivered` when written to the patient; SMS never."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff:
        await subscribed(staff, conversation)
        offline = await send(staff, conversation, "before")  # patient not connected
        sms = await send(staff, conversation, "sms", secure=False)
        async with connect(server.url, await patient_cookie(server.services, clinic)) as patient:
            await subscribed(patient, conversation)  # replays seq 1 (not the SMS)
            replayed = await staff.wait_type("status", status="delivered")
            assert replayed["message_id"] == offline["message_id"]
            live = await send(staff, conversation, "live")
            await patient.wait_type("message", seq=3)
            await staff.wait_type("status", status="delivered", message_id=live["message_id"])
            await send(patient, conversation, "barrier")
            await staff.wait_type("message", seq=4)
        delivered = [f["message_id"] for f in staff.of_type("status")
                     if f["status"] == "delivered"]
        assert sorted(delivered) == sorted([offline["message_id"], live["message_id"]])
        assert all(f["message_id"] != sms["message_id"] for f in staff.of_type("status"))
    async with server.login(clinic.staff_email) as http:
        history = (await http.get(f"/api/conversations/{conversation}/messages")).json()
    assert [m["status"] for m in history["messages"]] == ["delivered", "queued", "delivered",
                                                          "sent"]


@pytest.mark.parametrize("overrides", [{}])  # the SMS simulator: it says `delivered`
async def test_sms_status_never_reaches_the_patient(server: RunningServer,
                                                    clinic: Clinic) -> None:
    """An SMS's status changes reach staff but never the patient socket."""
    conversation = clinic.conversation_id
    async with staff_and_patient(server, clinic) as (staff, patient):
        sms = await send(staff, conversation, "sms", secure=False)
        await staff.wait_type("status", message_id=sms["message_id"], status="delivered")
        # Barrier: the patient gets this after anything dispatched with the SMS status.
        await send(staff, conversation, "sec")
        await patient.wait_type("message", seq=2)
        assert [f["type"] for f in patient.frames if sms["message_id"] in str(f)] == []
        assert [f["seq"] for f in patient.of_type("message")] == [2]


# --- presence ----------------------------------------------------------------------------

async def test_presence_follows_the_patient_page(server: RunningServer,
                                                 clinic: Clinic) -> None:
    """Staff presence follows the patient page; subscribe tells the current one."""
    conversation = clinic.conversation_id
    cookie = await staff_cookie(server, clinic.staff_email)
    async with connect(server.url, cookie) as staff:
        await subscribed(staff, conversation)
        assert (await staff.wait_type("presence"))["patient_online"] is False
        async with connect(server.url, await patient_cookie(server.services, clinic)) as patient:
            online = await staff.wait_type("presence", patient_online=True)
            assert online["conversation_id"] == conversation
            async with connect(server.url, cookie) as late:
                await subscribed(late, conversation)
                now = await late.wait_type("presence")
                assert now["patient_online"] is True
            await subscribed(patient, conversation)
            await send(staff, conversation, "m")
            await patient.wait_type("message", seq=1)
            assert patient.of_type("presence") == []
        await staff.wait_for(lambda _: len(staff.of_type("presence")) == 3)
        assert [f["patient_online"] for f in staff.of_type("presence")] == [False, True, False]


async def test_inbox_shows_patient_online(server: RunningServer, clinic: Clinic) -> None:
    """``patient_online`` in ``GET /api/conversations`` and in ``conversation`` frames is
    true while the patient's page is connected, false before and after."""
    conversation = clinic.conversation_id

    async def listed() -> bool:
        async with server.login(clinic.staff_email) as http:
            items = (await http.get("/api/conversations")).json()["conversations"]
        return next(c["patient_online"] for c in items if c["id"] == conversation)

    assert await listed() is False
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff:
        await staff.wait_type("ready")  # written once the hub has the socket
        async with connect(server.url, await patient_cookie(server.services, clinic)) as patient:
            await staff.wait_type("presence", patient_online=True)
            assert await listed() is True
            await subscribed(patient, conversation)
            await send(patient, conversation, "p-1")
            frame = await staff.wait_type("conversation", last_seq=1)
            assert frame["patient_online"] is True
        await staff.wait_type("presence", patient_online=False)
        assert await listed() is False
        await send(staff, conversation, "s-1", secure=False)
        frame = await staff.wait_type("conversation", last_seq=2)
        assert frame["patient_online"] is False  # present, not omitted
