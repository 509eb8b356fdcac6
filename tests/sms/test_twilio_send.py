"""Staff SMS through the Twilio provider (against a fake Twilio on a real port), and
delivery status callbacks moving the message forward only, live on a staff socket."""

from __future__ import annotations

from tests.conftest import Clinic, make_clinic
from tests.sms.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    STATUS_PATH,
    TWILIO_FROM,
    FakeTwilio,
    Node,
    SmsClinic,
    message_row,
    new_phone,
    sent_ok,
    staff_socket,
    status_callback,
)


def to(phone: str):
    return lambda request: request.form.get("To") == phone


async def test_staff_sms_reaches_twilio_and_callbacks_advance(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """REST SMS: Basic auth and form fields right; sent, then delivered; never backwards."""
    conversation = sms.conversation_id
    async with staff_socket(node, sms.staff_email, conversation) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, conversation, "See you Tuesday at 3pm", "c1")
        assert message["status"] == "queued" and message["channel"] == "sms"
        await ws.wait_type("status", message_id=message["id"], status="sent")

        [request] = fake_twilio.seen(to(sms.phone))
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
        assert request.form == {"To": sms.phone, "From": sms.number,
                                "Body": "See you Tuesday at 3pm",
                                "StatusCallback": PUBLIC_URL + STATUS_PATH}
        assert request.status == 201 and request.sid is not None
        assert (await message_row(node.services, message["id"]))["status"] == "sent"

        for status in ("sending", "sent", "delivered"):
            await status_callback(node, request.sid, status)
        await ws.wait_type("status", message_id=message["id"], status="delivered")
        # Late and repeated callbacks: a late ``sent``, the same ``delivered`` again.
        await status_callback(node, request.sid, "sent")
        await status_callback(node, request.sid, "delivered")
        await status_callback(node, request.sid, "queued")

        # A marker published after them: once it is here, any status frame they caused
        # would be too (one node dispatches its events in order).
        marker = await sent_ok(client, conversation, "marker", "c2")
        await ws.wait_type("message", id=marker["id"])
        statuses = [f["status"] for f in ws.of_type("status")
                    if f["message_id"] == message["id"]]
        assert statuses == ["sent", "delivered"]
        assert (await message_row(node.services, message["id"]))["status"] == "delivered"
        history = (await client.get(f"/api/conversations/{conversation}/messages")).json()
        assert [m["status"] for m in history["messages"] if m["id"] == message["id"]] == \
            ["delivered"]


async def test_ws_send_uses_default_from_and_reports_failure(
        node: Node, fake_twilio: FakeTwilio, services, clock) -> None:
    """WS send: From is TWILIO_FROM when the account has no number; undelivered carries
    its error code; a callback for an unknown sid changes nothing."""
    clinic: Clinic = await make_clinic(services, phone=(phone := new_phone()))
    conversation = clinic.conversation_id
    async with staff_socket(node, clinic.staff_email, conversation) as ws:
        await ws.send(type="send", ref="a", conversation_id=conversation,
                      client_msg_id="w1", body="Please call the front desk", secure=False)
        ack = await ws.wait_type("ack", ref="a")
        await ws.wait_type("status", message_id=ack["message_id"], status="sent")
        [request] = fake_twilio.seen(to(phone))
        assert request.form["From"] == TWILIO_FROM
        assert request.form["Body"] == "Please call the front desk"

        await status_callback(node, "SM" + "f" * 32, "delivered")  # not ours: 204, ignored
        await status_callback(node, request.sid, "undelivered", error_code="30005")
        frame = await ws.wait_type("status", message_id=ack["message_id"],
                                   status="undelivered")
        assert frame["error_code"] == "30005"
        await status_callback(node, request.sid, "sent")
        assert (await message_row(node.services, ack["message_id"]))["status"] == \
            "undelivered"
