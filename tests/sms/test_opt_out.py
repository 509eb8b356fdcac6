"""STOP, START and HELP from a patient (signed inbound webhooks), and Twilio's 21610."""

from __future__ import annotations

from server import events
from server.audit import Actor
from server.protocol import Sender, SendRequest
from server.runtime import Services
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
    opted_out,
    outbox_of,
    send_message,
    sent_ok,
    staff_socket,
    twilio_settings,
)


def to(phone: str):
    return lambda request: request.form.get("To") == phone


async def patient_flags(client, conversation_id: str) -> dict:
    listed = (await client.get("/api/conversations")).json()["conversations"]
    [conversation] = [c for c in listed if c["id"] == conversation_id]
    return conversation["patient"]


async def test_stop_refuses_sms_until_start(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """After STOP staff SMS are refused (409 / WS error) and nothing reaches Twilio."""
    conversation = sms.conversation_id
    async with staff_socket(node, sms.staff_email, conversation) as ws, \
            node.login(sms.staff_email) as client:
        await inbound(node, to=sms.number, from_=sms.phone, body="  Stop ")
        stop = await ws.wait_type("message", body="  Stop ")
        assert (stop["direction"], stop["channel"]) == ("inbound", "sms")
        assert await opted_out(node.services, sms.patient_id)
        assert (await patient_flags(client, conversation))["opted_out"] is True

        response = await send_message(client, conversation, "Are you there?", "r1")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "opted_out"
        await ws.send(type="send", ref="w", conversation_id=conversation,
                      client_msg_id="w1", body="Are you there?", secure=False)
        error = await ws.wait_type("error", ref="w")
        assert (error["code"], error["client_msg_id"]) == ("opted_out", "w1")

        await inbound(node, to=sms.number, from_=sms.phone, body="START")
        await ws.wait_type("message", body="START")
        assert not await opted_out(node.services, sms.patient_id)
        assert (await patient_flags(client, conversation))["opted_out"] is False
        message = await sent_ok(client, conversation, "Welcome back", "r2")
        await ws.wait_type("status", message_id=message["id"], status="sent")

    assert [r.form["Body"] for r in fake_twilio.seen(to(sms.phone))] == ["Welcome back"]
    assert [row["kind"] for row in await outbox_of(node.services, conversation)] == \
        ["message"]
    history = (await client_history(node, sms))
    assert [m["body"] for m in history if m["channel"] == "sms"] == \
        ["  Stop ", "START", "Welcome back"]


async def client_history(node: Node, sms: SmsClinic) -> list[dict]:
    async with node.login(sms.staff_email) as client:
        response = await client.get(f"/api/conversations/{sms.conversation_id}/messages")
    return response.json()["messages"]


async def test_help_answers_without_phi(node: Node, fake_twilio: FakeTwilio,
                                        sms: SmsClinic) -> None:
    """HELP queues a reply with the clinic's name and the keywords, and nothing else."""
    async with node.login(sms.staff_email) as client:
        await sent_ok(client, sms.conversation_id, "Your A1C came back at 9.1", "c1")
        await inbound(node, to=sms.number, from_=sms.phone, body="help")
        await fake_twilio.wait_for(lambda f: len(f.sent(to(sms.phone))) == 2)
    reply = fake_twilio.sent(to(sms.phone))[1]
    assert reply.form["From"] == sms.number
    body = reply.form["Body"]
    assert body.startswith(sms.clinic_name + ":") and "STOP" in body and "START" in body
    for phi in ("Pat", "Example", "A1C", "9.1", "1980", "Nurse"):
        assert phi not in body
    assert not await opted_out(node.services, sms.patient_id)
    kinds = [row["kind"] for row in await outbox_of(node.services, sms.conversation_id)]
    assert kinds == ["message", "help"]


async def test_stop_please_is_an_ordinary_message(node: Node, fake_twilio: FakeTwilio,
                                                 sms: SmsClinic) -> None:
    """'STOP PLEASE' is stored like any message and opts nobody out."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        await inbound(node, to=sms.number, from_=sms.phone, body="STOP PLEASE")
        await ws.wait_type("message", body="STOP PLEASE")
        assert not await opted_out(node.services, sms.patient_id)
        message = await sent_ok(client, sms.conversation_id, "Stop what?", "c1")
        await ws.wait_type("status", message_id=message["id"], status="sent")
    assert [r.form["Body"] for r in fake_twilio.sent(to(sms.phone))] == ["Stop what?"]


async def test_twilio_21610_opts_the_patient_out(node: Node, fake_twilio: FakeTwilio,
                                                sms: SmsClinic) -> None:
    """Twilio's 400 with code 21610 fails the SMS and marks the patient opted out."""
    fake_twilio.script(OPTED_OUT, match=to(sms.phone))
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, "Reminder: tomorrow", "c1")
        failed = await ws.wait_type("status", message_id=message["id"], status="failed")
        assert failed["error_code"] == "21610"
        assert await opted_out(node.services, sms.patient_id)
        assert (await patient_flags(client, sms.conversation_id))["opted_out"] is True
        response = await send_message(client, sms.conversation_id, "Hello?", "c2")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "opted_out"
    assert len(fake_twilio.seen(to(sms.phone))) == 1
    [row] = await outbox_of(node.services, sms.conversation_id)
    assert (row["status"], row["attempts"], row["error_code"]) == ("failed", 1, "21610")


async def test_no_notification_reaches_an_opted_out_patient(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic
        ) -> None:
    """A secure message to an opted-out patient is stored ``not_notified``; no
    notification is even queued."""
    await services.messaging.receive_sms(sms.account_id, sms.conversation_id,
                                         Sender("patient", sms.patient_id, ""),
                                         message_sid(), "STOP")
    result = await services.messaging.send(
        sms.account_id, Sender("staff", sms.staff_id, "Nurse"), sms.conversation_id,
        SendRequest("s1", "Your result", True), Actor("staff", sms.staff_id))
    published: list[events.StatusEvent] = []
    worker = manual_worker(services, twilio_settings(database_url, fake_twilio),
                           fake_twilio, published)
    try:
        await drain(worker)
    finally:
        await worker.stop()
    assert fake_twilio.seen(to(sms.phone)) == []
    assert await outbox_of(services, sms.conversation_id) == []
    assert result.status_error == "opted_out"
    assert (await message_row(services, result.message.id))["status"] == "not_notified"
