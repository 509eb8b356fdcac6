"""Secure messages never reach the SMS provider: the patient gets a notification with the
clinic's name and a link whose token the store keeps only as a SHA-256; at most one per
window while unread, none while the patient is on the secure page."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select

from server.clock import FakeClock
from server.store.tables import secure_links
from tests.realtime.wsclient import connect, patient_cookie
from tests.sms.support import (
    PUBLIC_URL,
    FakeTwilio,
    Node,
    SmsClinic,
    find_in_db,
    message_row,
    outbox_of,
    sent_ok,
    staff_socket,
)


def notification_token(clinic_name: str, body: str) -> str:
    """The link token of a notification, which must be exactly the template."""
    match = re.fullmatch(rf"{re.escape(clinic_name)}: you have a new secure message\. "
                         rf"View it at {re.escape(PUBLIC_URL)}/s/([A-Za-z0-9_-]{{43}})", body)
    assert match is not None, body
    return match.group(1)


def to(phone: str):
    return lambda request: request.form.get("To") == phone


async def test_secure_message_sends_only_clinic_name_and_link(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """The notification holds no PHI; the token is stored only as its SHA-256."""
    canary = "CANARY-" + secrets.token_hex(8)
    body = f"Pat Example, your biopsy result {canary} shows stage 2; see Dr. House."
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, body, "s1", secure=True)
        assert message["channel"] == "secure"
        await ws.wait_type("status", message_id=message["id"], status="notified")

    [request] = fake_twilio.seen(to(sms.phone))
    assert request.form["From"] == sms.number
    token = notification_token(sms.clinic_name, request.form["Body"])
    for word in ("Pat", "Example", "biopsy", "Dr.", "Nurse", "1980"):
        assert word not in request.form["Body"]
    assert not [r for r in fake_twilio.requests
                if any(canary in value for value in r.form.values())]
    assert (await message_row(node.services, message["id"]))["status"] == "notified"

    async with node.services.db.read() as conn:
        links = (await conn.execute(select(secure_links).where(
            secure_links.c.conversation_id == sms.conversation_id))).mappings().all()
    assert [link["token_hash"] for link in links] == [hashlib.sha256(token.encode()).hexdigest()]
    assert await find_in_db(node.services, token) == []
    assert await find_in_db(node.services, canary) == []


async def test_one_notification_per_window_while_unread(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic, clock: FakeClock) -> None:
    """A second secure message within 10 minutes of an unread one notifies nobody."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        first = await sent_ok(client, sms.conversation_id, "Result one", "s1", secure=True)
        await ws.wait_type("status", message_id=first["id"], status="notified")
        clock.advance(seconds=599)
        second = await sent_ok(client, sms.conversation_id, "Result two", "s2", secure=True)
        # An SMS queued after it in the same conversation goes out after anything the
        # second message queued: once it is sent, a notification would have been too.
        marker = await sent_ok(client, sms.conversation_id, "marker", "m1")
        await ws.wait_type("status", message_id=marker["id"], status="sent")
        bodies = [r.form["Body"] for r in fake_twilio.seen(to(sms.phone))]
        assert len(bodies) == 2 and bodies[1] == "marker"
        notification_token(sms.clinic_name, bodies[0])
        assert (await message_row(node.services, second["id"]))["status"] == "sent"
        assert [row["kind"] for row in await outbox_of(node.services, sms.conversation_id)] \
            == ["notification", "message"]

        clock.advance(seconds=2)  # 601 s after the first notification: a new one is due
        third = await sent_ok(client, sms.conversation_id, "Result three", "s3", secure=True)
        await ws.wait_type("status", message_id=third["id"], status="notified")
    requests = fake_twilio.seen(to(sms.phone))
    assert len(requests) == 3
    tokens = {notification_token(sms.clinic_name, r.form["Body"])
              for r in (requests[0], requests[2])}
    assert len(tokens) == 2  # every notification carries a fresh link


async def test_read_messages_allow_the_next_notification(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """Within the window, once the patient has read, the next secure message notifies."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        first = await sent_ok(client, sms.conversation_id, "Result one", "s1", secure=True)
        await ws.wait_type("status", message_id=first["id"], status="notified")

        async with connect(node.url, await patient_cookie(node.services, sms)) as patient:
            await patient.wait_type("ready")
            await patient.send(type="subscribe", ref="s", conversation_id=sms.conversation_id)
            await patient.wait_type("message", id=first["id"])
            await patient.send(type="read", conversation_id=sms.conversation_id,
                               seq=first["seq"])
            await ws.wait_type("read", seq=first["seq"])
        await ws.wait_for(lambda _: [f["patient_online"] for f in ws.of_type("presence")][-2:]
                          == [True, False])

        second = await sent_ok(client, sms.conversation_id, "Result two", "s2", secure=True)
        await ws.wait_type("status", message_id=second["id"], status="notified")
    assert len(fake_twilio.sent(to(sms.phone))) == 2


async def test_no_notification_while_patient_is_online(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """A patient on the secure page gets the message live and no SMS."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client, \
            connect(node.url, await patient_cookie(node.services, sms)) as patient:
        await patient.wait_type("ready")
        await patient.send(type="subscribe", ref="s", conversation_id=sms.conversation_id)
        await patient.wait_type("subscribed", ref="s")
        message = await sent_ok(client, sms.conversation_id, "Your result is normal", "s1",
                                secure=True)
        assert (await patient.wait_type("message", id=message["id"]))["body"] == \
            "Your result is normal"
        await ws.wait_type("status", message_id=message["id"], status="delivered")
        marker = await sent_ok(client, sms.conversation_id, "marker", "m1")
        await ws.wait_type("status", message_id=marker["id"], status="sent")
    assert [r.form["Body"] for r in fake_twilio.seen(to(sms.phone))] == ["marker"]
    assert [row["kind"] for row in await outbox_of(node.services, sms.conversation_id)] == \
        ["message"]
    assert (await message_row(node.services, message["id"]))["status"] == "delivered"
