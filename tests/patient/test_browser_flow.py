"""Issue 5 in a real headless Chromium at phone size: the link from the SMS, the date of
birth, the thread live both ways, the idle limit, "End session" and Back."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from server.clock import FakeClock
from tests.conftest import Clinic
from tests.patient.support import DOB, Node, new_link, notification_link
from tests.realtime.wsclient import connect, staff_cookie


async def open_and_verify(page: Any, node: Node, token: str) -> None:
    await page.goto(f"{node.url}/s/{token}")
    await page.get_by_label("Date of birth").fill(DOB)
    await page.get_by_role("button", name="Continue").click()
    await expect(page).to_have_url(f"{node.url}/s/chat")
    await expect(page.locator("#connection")).to_have_text("Connected")


async def test_link_to_reply_end_to_end(node: Node, clinic: Clinic, phone: Any) -> None:
    """Staff sends a secure message by the API; the simulator holds the link, not the
    body; the page verifies, shows it, marks it read and its reply reaches staff live."""
    body = "Your lab results are ready: all normal."
    async with connect(node.url, await staff_cookie(node, clinic.staff_email)) as staff, \
            node.login(clinic.staff_email) as api:
        await staff.wait_type("ready")
        await staff.send(type="subscribe", ref="s", conversation_id=clinic.conversation_id)
        await staff.wait_type("subscribed", ref="s")
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": "e2e-1", "body": body,
                                        "secure": True})
        assert response.status_code == 201, response.text
        message_id = response.json()["message"]["id"]
        await staff.wait_type("status", message_id=message_id, status="notified")

        sms, token = await notification_link(node, clinic)
        assert "lab results" not in sms and body not in sms

        await open_and_verify(phone, node, token)
        mine = phone.locator("#thread li.theirs .body")
        await expect(mine).to_have_text([body])

        read = await staff.wait_for(lambda f: (
            f["type"] == "read" and f.get("seq", 0) >= 1) or (
            f["type"] == "status" and f["message_id"] == message_id
            and f["status"] == "read"))
        assert read is not None

        await phone.get_by_label("Your reply").fill("Thank you, see you Monday")
        await phone.get_by_role("button", name="Send").click()
        reply = await staff.wait_type("message", body="Thank you, see you Monday")
        assert (reply["direction"], reply["channel"]) == ("inbound", "secure")
        assert reply["sender"]["id"] == clinic.patient_id
        await expect(phone.locator("#thread li.mine .status")).to_have_text(["Sent"])


async def test_idle_limit_ends_the_page(node: Node, clinic: Clinic, phone: Any,
                                        clock: FakeClock) -> None:
    """16 idle minutes: the hub closes the socket with 4401 and the page drops the thread
    and asks to verify again."""
    body = "Please call the office about your appointment."
    async with node.login(clinic.staff_email) as api:
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": "idle-1", "body": body,
                                        "secure": True})
        assert response.status_code == 201
    token = await new_link(node, clinic)
    async with connect(node.url, await staff_cookie(node, clinic.staff_email)) as staff:
        await staff.wait_type("ready")
        await staff.send(type="subscribe", ref="s", conversation_id=clinic.conversation_id)
        await staff.wait_type("subscribed", ref="s")
        await open_and_verify(phone, node, token)
        await expect(phone.locator("#thread")).to_contain_text(body)
        await staff.wait_type("read")  # the page's last frame (user activity) is handled
    await node.realtime.upkeep.check_sessions()  # records that activity at the current time
    clock.advance(minutes=16)
    await expect(phone.get_by_text(re.compile("session has ended"))).to_be_visible()
    assert body not in await phone.content()
    assert await phone.locator("#thread").count() == 0


async def test_end_session_then_back_shows_nothing(node: Node, clinic: Clinic,
                                                   phone: Any) -> None:
    body = 'Bring your <b>insurance card</b> <img src=x onerror="window.pwned=1">'
    async with node.login(clinic.staff_email) as api:
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": "back-1", "body": body,
                                        "secure": True})
        assert response.status_code == 201
    await open_and_verify(phone, node, await new_link(node, clinic))
    # Message text is only ever text: the markup shows as typed and runs nothing.
    await expect(phone.locator("#thread li.theirs .body")).to_have_text([body])
    assert await phone.locator("#thread b, #thread img").count() == 0
    assert await phone.evaluate("window.pwned") is None
    await phone.get_by_role("button", name="End session").click()
    await expect(phone).to_have_url(f"{node.url}/s/ended")
    await expect(phone.get_by_role("heading")).to_have_text(
        "Your secure session has ended")
    await phone.go_back()
    await expect(phone.get_by_role("heading")).to_have_text(
        "Your secure session has ended")
    assert "insurance card" not in await phone.content()
    assert await phone.locator("#thread li").count() == 0
