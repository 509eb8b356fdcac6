"""Twilio's webhooks: signatures over the public URL and every parameter, inbound SMS
de-duplicated by MessageSid, routed to the patient (or to a new unknown one), live."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx

from tests.sms.support import (
    AUTH_TOKEN,
    INBOUND_PATH,
    PUBLIC_URL,
    STATUS_PATH,
    FakeTwilio,
    Node,
    SmsClinic,
    count_messages,
    inbound,
    inbound_params,
    message_row,
    message_sid,
    new_phone,
    sent_ok,
    signature,
    staff_socket,
)


def spec_signature(url: str, pairs: list[tuple[str, str]], token: str = AUTH_TOKEN) -> str:
    """``shared/spec/sms.md``: URL, then each name+value sorted by name then value,
    HMAC-SHA1 with the Auth Token, Base64 (written out, not the SDK's)."""
    data = url + "".join(name + value for name, value in sorted(pairs))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
                            ).decode()


async def conversations(client: httpx.AsyncClient) -> list[dict]:
    response = await client.get("/api/conversations", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["conversations"]


async def test_bad_or_missing_signatures_are_refused(node: Node, sms: SmsClinic) -> None:
    """Missing, wrong-key, wrong-URL or tampered signatures: 403 and nothing stored."""
    stranger = new_phone()
    for from_ in (sms.phone, stranger):
        params = inbound_params(to=sms.number, from_=from_, body="hello")
        good = signature(INBOUND_PATH, params)
        tampered = dict(params, Body="HELLO")
        attempts = [
            (params, {}),
            (params, {"X-Twilio-Signature": ""}),
            (params, {"X-Twilio-Signature": signature(INBOUND_PATH, params,
                                                      token="0" * 32)}),
            # Signed over the address the app sees rather than PUBLIC_URL.
            (params, {"X-Twilio-Signature": signature(INBOUND_PATH, params,
                                                      url=node.url + INBOUND_PATH)}),
            (tampered, {"X-Twilio-Signature": good}),
            (params, {"X-Twilio-Signature": good[:-4] + "AAA="}),
        ]
        async with node.client() as client:
            for data, headers in attempts:
                response = await client.post(INBOUND_PATH, data=data, headers=headers)
                assert response.status_code == 403, response.text
                assert response.json()["error"]["code"] == "forbidden"
    assert await count_messages(node.services, sms.conversation_id) == 0
    async with node.login(sms.staff_email) as client:
        assert [c["id"] for c in await conversations(client)] == [sms.conversation_id]


async def test_status_callback_needs_its_signature(
        node: Node, fake_twilio: FakeTwilio, sms: SmsClinic) -> None:
    """An unsigned or mis-signed status callback answers 403 and moves nothing."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, "Your refill is ready", "c1")
        await ws.wait_type("status", message_id=message["id"], status="sent")
    [request] = fake_twilio.sent(lambda r: r.form["To"] == sms.phone)
    params = {"MessageSid": request.sid, "MessageStatus": "delivered",
              "AccountSid": "AC" + "0" * 32}
    async with node.client() as client:
        for headers in ({}, {"X-Twilio-Signature": signature(STATUS_PATH, params,
                                                             token="f" * 32)},
                        {"X-Twilio-Signature": signature(INBOUND_PATH, params)}):
            response = await client.post(STATUS_PATH, data=params, headers=headers)
            assert response.status_code == 403
    assert (await message_row(node.services, message["id"]))["status"] == "sent"


async def test_signature_variants_twilio_uses_are_accepted(node: Node, sms: SmsClinic
                                                           ) -> None:
    """The URL with its default port, and repeated parameters, sign like Twilio does."""
    params = inbound_params(to=sms.number, from_=sms.phone, body="with port")
    async with node.client() as client:
        response = await client.post(INBOUND_PATH, data=params, headers={
            "X-Twilio-Signature": signature(INBOUND_PATH, params,
                                            url="http://sms.clinic.test:80" + INBOUND_PATH)})
        assert response.status_code == 200, response.text

        # MMS-style repeated names: every value is signed, not only the last one.
        pairs = [*inbound_params(to=sms.number, from_=sms.phone, body="two values").items(),
                 ("Extra", "b"), ("Extra", "a")]
        content = httpx.QueryParams(pairs)
        response = await client.post(
            INBOUND_PATH, content=str(content),
            headers={"content-type": "application/x-www-form-urlencoded",
                     "X-Twilio-Signature": spec_signature(PUBLIC_URL + INBOUND_PATH, pairs)})
        assert response.status_code == 200, response.text
        # Dropping one of the repeated values breaks the signature.
        response = await client.post(
            INBOUND_PATH, content=str(httpx.QueryParams(pairs[:-1])),
            headers={"content-type": "application/x-www-form-urlencoded",
                     "X-Twilio-Signature": spec_signature(PUBLIC_URL + INBOUND_PATH, pairs)})
        assert response.status_code == 403
    assert await count_messages(node.services, sms.conversation_id) == 2


async def test_inbound_from_patient_is_live_and_stored_once(node: Node, sms: SmsClinic
                                                            ) -> None:
    """A known patient's SMS reaches the staff socket as inbound/sms; its retry does not."""
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws:
        sid = message_sid()
        first = await inbound(node, to=sms.number, from_=sms.phone, body="Running late",
                              sid=sid)
        assert first.headers["content-type"].startswith("text/xml")
        assert "<Response/>" in first.text
        frame = await ws.wait_type("message", client_msg_id=sid)
        assert (frame["direction"], frame["channel"], frame["body"]) == \
            ("inbound", "sms", "Running late")
        assert frame["sender"]["kind"] == "patient"
        assert frame["sender"]["id"] == sms.patient_id

        await inbound(node, to=sms.number, from_=sms.phone, body="Running late", sid=sid)
        marker = await inbound(node, to=sms.number, from_=sms.phone, body="marker")
        assert marker.status_code == 200
        await ws.wait_type("message", body="marker")
        assert [f["body"] for f in ws.of_type("message")] == ["Running late", "marker"]
    assert await count_messages(node.services, sms.conversation_id) == 2


async def test_inbound_from_unknown_number_opens_unknown_conversation(
        node: Node, sms: SmsClinic) -> None:
    """An unknown number gets a new conversation whose patient is marked unknown."""
    stranger = new_phone()
    async with staff_socket(node, sms.staff_email) as ws:
        await inbound(node, to=sms.number, from_=stranger, body="Who is this?")
        update = await ws.wait_for(lambda f: f["type"] == "conversation"
                                   and f["id"] != sms.conversation_id)
        assert update["last_seq"] == 1 and update["unread"] == 1
        # A second SMS from the same number lands in the same conversation.
        await inbound(node, to=sms.number, from_=stranger, body="Hello?")
        await ws.wait_for(lambda f: f["type"] == "conversation" and f["last_seq"] == 2)
    async with node.login(sms.staff_email) as client:
        listed = {c["id"]: c for c in await conversations(client)}
        assert set(listed) == {sms.conversation_id, update["id"]}
        patient = listed[update["id"]]["patient"]
        assert patient["unknown"] is True and patient["display_name"] == "Unknown sender"
        assert patient["masked_phone"].endswith(stranger[-4:])
        assert listed[sms.conversation_id]["patient"]["unknown"] is False
        history = (await client.get(f"/api/conversations/{update['id']}/messages")).json()
        assert [(m["body"], m["direction"], m["channel"]) for m in history["messages"]] == \
            [("Who is this?", "inbound", "sms"), ("Hello?", "inbound", "sms")]


async def test_inbound_to_no_accounts_number_is_dropped(node: Node, sms: SmsClinic) -> None:
    """An SMS to a number no account has is answered 200 (no retries) and stored nowhere."""
    await inbound(node, to=new_phone(), from_=sms.phone, body="wrong number")
    assert await count_messages(node.services, sms.conversation_id) == 0


async def test_no_dev_pages_with_twilio(node: Node) -> None:
    """With SMS_PROVIDER=twilio the simulator's phone page does not exist."""
    async with node.client() as client:
        assert (await client.get("/dev/phone")).status_code == 404
