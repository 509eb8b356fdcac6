"""The demo: the simulator provider and ``/dev/phone`` (what each number received, links
clickable, answer as the patient), in a demo-mode node."""

from __future__ import annotations

import html
import re
import secrets

import pytest

from server.clock import FakeClock
from server.settings import Settings
from server.web.context import app_runtime
from tests.conftest import ORIGIN, settings_for_tests
from tests.sms.support import (
    INBOUND_PATH,
    PUBLIC_URL,
    Node,
    SmsClinic,
    count_messages,
    find_in_db,
    inbound_params,
    message_row,
    run_node,
    sent_ok,
    signature,
    staff_socket,
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """`securechat demo`: the simulator, dev pages on."""
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, public_url=PUBLIC_URL, demo=True)


async def phone_page(node: Node) -> str:
    async with node.client() as client:
        response = await client.get("/dev/phone")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def test_staff_sms_shows_on_the_phone_page(node: Node, sms: SmsClinic) -> None:
    """The page lists the number and the body, escaped, with its link as an <a>."""
    body = "Directions: https://clinic.example/map?a=1&b=2 <b>bring ID</b>"
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, body, "c1")
        await ws.wait_type("status", message_id=message["id"], status="delivered")
    page = await phone_page(node)
    section = page[page.index(f'id="phone-{sms.phone[1:]}"'):]
    section = section[:section.index("</section>")]
    assert ('<a href="https://clinic.example/map?a=1&amp;b=2" rel="noreferrer">'
            "https://clinic.example/map?a=1&amp;b=2</a>") in section
    assert "&lt;b&gt;bring ID&lt;/b&gt;" in section and "<b>" not in section
    assert f'name="from" value="{sms.phone}"' in section
    assert f'name="to" value="{sms.number}"' in section


async def test_reply_from_the_phone_page_is_live_in_the_thread(node: Node, sms: SmsClinic
                                                               ) -> None:
    """A reply posted from the page reaches the staff socket as an inbound SMS."""
    form = {"from": sms.phone, "to": sms.number, "body": "On my way"}
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.client() as client:
        refused = await client.post("/dev/phone/reply", data=form,
                                    headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403
        response = await client.post("/dev/phone/reply", data=form,
                                     headers={"Origin": ORIGIN})
        assert response.status_code == 303
        assert response.headers["location"] == f"/dev/phone#phone-{sms.phone[1:]}"
        frame = await ws.wait_type("message", body="On my way")
        assert (frame["direction"], frame["channel"]) == ("inbound", "sms")
        assert frame["sender"]["id"] == sms.patient_id
    assert await count_messages(node.services, sms.conversation_id) == 1


async def test_secure_message_never_reaches_the_simulator(node: Node, sms: SmsClinic) -> None:
    """The simulator's log and page hold the notification and link, never the body."""
    canary = "CANARY-" + secrets.token_hex(8)
    async with staff_socket(node, sms.staff_email, sms.conversation_id) as ws, \
            node.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, f"Result {canary} attached",
                                "s1", secure=True)
        await ws.wait_type("status", message_id=message["id"], status="notified")
    inbox = await app_runtime(node.app).sms_provider.inbox()
    assert not [sms_ for sms_ in inbox if canary in sms_["body"]]
    [notification] = [sms_ for sms_ in inbox if sms_["to"] == sms.phone]
    match = re.fullmatch(rf"{re.escape(sms.clinic_name)}: you have a new secure message\. "
                         rf"View it at {re.escape(PUBLIC_URL)}/s/([A-Za-z0-9_-]{{43}})",
                         notification["body"])
    assert match is not None, notification["body"]
    url = html.escape(f"{PUBLIC_URL}/s/{match.group(1)}", quote=True)
    page = await phone_page(node)
    assert canary not in page
    assert f'<a href="{url}" rel="noreferrer">{url}</a>' in page
    assert await find_in_db(node.services, canary, match.group(1)) == []
    assert (await message_row(node.services, message["id"]))["status"] == "notified"


async def test_dev_pages_and_webhooks_follow_the_mode(
        node: Node, sms: SmsClinic, database_url: str, master_key: bytes, clock: FakeClock
        ) -> None:
    """Demo has /dev/phone and no Twilio webhooks; a non-demo simulator node neither."""
    params = inbound_params(to=sms.number, from_=sms.phone, body="hi")
    async with node.client() as client:
        response = await client.post(INBOUND_PATH, data=params, headers={
            "X-Twilio-Signature": signature(INBOUND_PATH, params)})
        assert response.status_code == 404
    plain = settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                               password_hash_concurrency=2, public_url=PUBLIC_URL)
    async with run_node(plain, master_key, clock) as other, other.client() as client:
        assert (await client.get("/dev/phone")).status_code == 404
        response = await client.post("/dev/phone/reply", headers={"Origin": ORIGIN},
                                     data={"from": sms.phone, "to": sms.number, "body": "x"})
        assert response.status_code in (404, 405)
    assert await count_messages(node.services, sms.conversation_id) == 0
