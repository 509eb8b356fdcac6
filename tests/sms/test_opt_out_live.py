"""STOP made visible (issue 13, acceptance 3): an inbound STOP (or START, or the
provider's 21610) sends a ``conversation`` frame with the new ``opted_out`` to every staff
socket of the account, on every node; a secure message the patient cannot be told of is
``not_notified`` (``opted_out``), live and in history."""

from __future__ import annotations

from typing import Any

from server import events
from server.audit import Actor
from server.brokers.redis import RedisBroker
from server.clock import FakeClock, rfc3339
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.web.context import app_runtime
from tests.realtime.test_cluster import two_nodes
from tests.realtime.wsclient import connect, staff_cookie
from tests.sms.support import (
    OPTED_OUT,
    FakeTwilio,
    Node,
    SmsClinic,
    drain,
    inbound,
    manual_worker,
    message_row,
    message_sid,
    sent_ok,
    sms_clinic,
    staff_socket,
    twilio_settings,
)


def inbox_frame(conversation_id: str, opted_out: bool, last_seq: int = 0):
    """Matches a ``conversation`` frame of ``conversation_id`` with that opt-out, at
    ``last_seq`` or later."""
    return lambda f: (f["type"] == "conversation" and f["id"] == conversation_id
                      and f["patient"]["opted_out"] is opted_out
                      and f["last_seq"] >= last_seq)


def to(phone: str):
    return lambda request: request.form.get("To") == phone


async def listed_patient(node: Node, email: str, conversation_id: str) -> dict:
    async with node.login(email) as client:
        listed = (await client.get("/api/conversations")).json()["conversations"]
    [row] = [c for c in listed if c["id"] == conversation_id]
    return row["patient"]


async def test_stop_and_start_are_live_on_every_staff_socket(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic, clock: FakeClock) -> None:
    """Two staff consoles (one with the thread open) see STOP at once, with its date; a
    secure message afterwards is ``not_notified``/``opted_out`` and no SMS leaves;
    START turns the state back, live."""
    conversation = sms.conversation_id
    async with staff_socket(node, sms.staff_email, conversation) as nurse, \
            staff_socket(node, sms.admin_email) as admin, \
            node.login(sms.staff_email) as client:
        # A first reply: each node now holds the patient's summary (opted in) in memory.
        await inbound(node, to=sms.number, from_=sms.phone, body="Hello")
        for ws in (nurse, admin):
            await ws.wait_for(inbox_frame(conversation, False))

        clock.advance(minutes=5)
        stopped_at = rfc3339(clock.now())
        await inbound(node, to=sms.number, from_=sms.phone, body="STOP")
        for ws in (nurse, admin):
            frame = await ws.wait_for(inbox_frame(conversation, True))
            assert frame["patient"]["opted_out_at"] == stopped_at
            assert frame["last_seq"] == 2  # the STOP message itself
        assert (await listed_patient(node, sms.staff_email, conversation))[
            "opted_out_at"] == stopped_at

        message = await sent_ok(client, conversation, "Your result is ready", "s1",
                                secure=True)
        assert message["status"] == "not_notified"
        status = await nurse.wait_type("status", message_id=message["id"])
        assert (status["status"], status["error_code"]) == ("not_notified", "opted_out")
        history = (await client.get(f"/api/conversations/{conversation}/messages")).json()
        assert history["messages"][-1]["status"] == "not_notified"

        await inbound(node, to=sms.number, from_=sms.phone, body="START")
        for ws in (nurse, admin):
            # Past the STOP (2) and the secure message (3): the START (4).
            frame = await ws.wait_for(inbox_frame(conversation, False, last_seq=4))
            assert frame["patient"]["opted_out_at"] is None
    assert fake_twilio.seen(to(sms.phone)) == []  # neither a notification nor anything


async def test_a_provider_opt_out_is_live_too(node: Node, fake_twilio: FakeTwilio,
                                              sms: SmsClinic) -> None:
    """Twilio refusing a send with 21610 opts the patient out: staff see it at once."""
    fake_twilio.script(OPTED_OUT, match=to(sms.phone))
    async with staff_socket(node, sms.staff_email) as ws, \
            node.login(sms.staff_email) as client:
        await sent_ok(client, sms.conversation_id, "Reminder: tomorrow", "c1")
        frame = await ws.wait_for(inbox_frame(sms.conversation_id, True), timeout=10)
        assert frame["patient"]["opted_out_at"]


async def test_a_notification_stopped_by_stop_is_not_notified(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic
        ) -> None:
    """A notification queued before the STOP is never sent: its secure message becomes
    ``not_notified`` with ``opted_out`` (it said "sent" before)."""
    result = await services.messaging.send(
        sms.account_id, Sender("staff", sms.staff_id, "Nurse"), sms.conversation_id,
        SendRequest("s1", "Your result", True), Actor("staff", sms.staff_id))
    assert result.sms_queued and result.message.status == "sent"
    await services.messaging.receive_sms(sms.account_id, sms.conversation_id,
                                         Sender("patient", sms.patient_id, ""),
                                         message_sid(), "STOP")
    published: list[Any] = []
    worker = manual_worker(services, twilio_settings(database_url, fake_twilio),
                           fake_twilio, published)
    try:
        await drain(worker)
    finally:
        await worker.stop()
    assert fake_twilio.seen(to(sms.phone)) == []
    assert (await message_row(services, result.message.id))["status"] == "not_notified"
    [status] = [e for e in published if isinstance(e, events.StatusEvent)
                and e.message_id == result.message.id]
    assert (status.status, status.error_code) == ("not_notified", "opted_out")


async def test_stop_reaches_staff_on_the_other_node(
        database_url: str, redis_url: str, master_key: bytes, clock: FakeClock) -> None:
    """The STOP lands on node A; a console on node B (through the real Redis) and one on
    A both get the frame."""
    brokers = [RedisBroker(redis_url), RedisBroker(redis_url)]
    async with two_nodes(database_url, master_key, clock, brokers) as (a, b):
        sms = await sms_clinic(a.services)
        conversation = sms.conversation_id
        async with connect(b.url, await staff_cookie(b, sms.staff_email)) as on_b, \
                connect(a.url, await staff_cookie(a, sms.admin_email)) as on_a:
            for ws in (on_a, on_b):
                await ws.wait_type("ready")
            # Both nodes cache the summary (opted in) first.
            await app_runtime(a.app).sms_inbound.receive(to=sms.number, from_=sms.phone,
                                                  body="Hi", sid=message_sid())
            for ws in (on_a, on_b):
                await ws.wait_for(inbox_frame(conversation, False))
            await app_runtime(a.app).sms_inbound.receive(to=sms.number, from_=sms.phone,
                                                  body="stop", sid=message_sid())
            for ws in (on_a, on_b):
                await ws.wait_for(inbox_frame(conversation, True))
