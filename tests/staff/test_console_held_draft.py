"""Issue 13, acceptance 1, in real headless Chromium against a real node whose SMS
provider is the fake Twilio (tests/sms/support.py): a draft written with Secure Chat on
never leaves as SMS because its channel went away.

The portal is turned off from another session (an admin's PUT, which reaches the console
as a live `account` frame): the switch goes, the draft is held and explained, Enter and
Send send nothing (nothing stored, nothing shown, nothing at the provider); only "Send as
SMS instead…" followed by a second, separate "Yes, send as plain SMS" sends it, and then it
does reach the provider (the positive control for the silence before). The portal back on
lifts the hold with the switch on. A secure send queued while the server was down and
refused on reconnect (`portal_inactive`) comes back to the composer held, never resent
as SMS.

How "nothing reached the provider" is waited for: the node's outbox worker is woken the
moment an SMS is queued and polls every second besides (server/services/sms_worker.py), and in
these tests an SMS that is sent reaches the fake within well under a second. So the test
waits on the fake's own condition (a request carrying the text) for QUIET_SECONDS and
expects it not to come: three full poll periods, each of which would have sent it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from server.clock import FakeClock
from server.runtime import Services
from server.store.tables import accounts
from tests.conftest import Clinic
from tests.patient.support import PHONE_VIEWPORT, Node, run_node
from tests.patient.test_screenshots import screenshots_dir
from tests.sms.support import ACCOUNT_SID, AUTH_TOKEN, TWILIO_FROM, FakeTwilio
from tests.staff.support import (
    RECONNECT_MS,
    browser_page,
    console,
    count_messages,
    open_thread,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DRAFT = "Maria, your prescription for lisinopril 10mg is ready."
HELD = ("This message was written for Secure Chat, which is no longer available (the "
        "patient portal was turned off). It has not been sent.")
QUIET_SECONDS = 3.0  # three of the outbox worker's 1 s polls (see the module docstring)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio.running() as running:
        yield running


def twilio(fake: FakeTwilio) -> dict[str, Any]:
    """A node's settings for sending through the fake Twilio."""
    return {"sms_provider": "twilio", "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN, "twilio_from": TWILIO_FROM,
            "twilio_api_base": fake.url}


@pytest.fixture
async def node(database_url: str, master_key: bytes, clock: FakeClock, fake: FakeTwilio
               ) -> AsyncIterator[Node]:
    async with run_node(database_url, master_key, clock, **twilio(fake)) as running:
        yield running


def body_has(text: str):
    """A request to the fake whose SMS body holds ``text``."""
    return lambda request: text in request.form.get("Body", "")


def carrying(text: str):
    """The fake has seen such a request (a condition for ``FakeTwilio.wait_for``)."""
    return lambda twilio: bool(twilio.seen(body_has(text)))


async def assert_never_sent(fake: FakeTwilio, text: str) -> None:
    """No request carrying ``text`` reaches the provider within QUIET_SECONDS."""
    with pytest.raises(TimeoutError):
        await fake.wait_for(carrying(text), timeout=QUIET_SECONDS)
    assert not fake.seen(body_has(text))


async def set_portal(admin: Any, active: bool) -> None:
    response = await admin.put("/api/account/settings", json={"portal_active": active})
    assert response.status_code == 200, response.text


@contextlib.asynccontextmanager
async def held_draft(browser: Any, node: Node, clinic: Clinic, *, viewport: dict | None = None
                     ) -> AsyncIterator[tuple[Any, Any]]:
    """A console with DRAFT typed under Secure Chat, then the portal turned off by an
    admin in another session; yields (page, the admin's client)."""
    options = {"viewport": viewport} if viewport else {}
    async with console(browser, node, clinic.staff_email, **options) as page, \
            node.login(clinic.admin_email) as admin:
        await open_thread(page, clinic.conversation_id)
        switch = page.get_by_role("switch", name="Secure Chat")
        await switch.check()
        await page.get_by_label("Message").fill(DRAFT)
        await expect(page.locator("#held-draft")).to_be_hidden()
        await set_portal(admin, False)
        await expect(switch).to_have_count(0)
        await expect(page.locator("#held-draft .held-why")).to_have_text(HELD)
        yield page, admin


async def test_held_draft_needs_a_second_deliberate_click(node: Node, clinic: Clinic,
                                                          browser: Any,
                                                          fake: FakeTwilio) -> None:
    async with held_draft(browser, node, clinic) as (page, _):
        message = page.get_by_label("Message")
        alert = page.locator("#held-draft")
        await expect(alert).to_have_attribute("role", "alert")
        await expect(message).to_have_value(DRAFT)
        await expect(page.locator("#composer")).to_have_attribute("data-held", "")

        # Enter, then the Send button: each only points to the choice.
        await message.press("Enter")
        ask = page.get_by_role("button", name="Send as SMS instead…")
        await expect(ask).to_be_focused()
        await expect(alert).to_have_attribute("data-nudged", "")
        await page.get_by_role("button", name="Send", exact=True).click()
        await expect(ask).to_be_focused()
        await expect(message).to_have_value(DRAFT)
        await expect(alert).to_be_visible()
        await expect(page.locator("#thread li")).to_have_count(0)
        await assert_never_sent(fake, "lisinopril")
        assert await count_messages(node.services, clinic.conversation_id) == 0

        # The first click asks. A double click does not confirm: the question takes the
        # place of the first button, and "Cancel" comes before the confirm.
        await ask.dblclick()
        confirm = page.get_by_role("button", name="Yes, send as plain SMS")
        cancel = page.get_by_role("button", name="Cancel")
        await expect(confirm).to_be_visible()
        await expect(cancel).to_be_focused()
        await cancel.click()
        await expect(confirm).to_be_hidden()
        await expect(ask).to_be_focused()
        # Changing the text takes a confirmation back.
        await ask.click()
        await expect(confirm).to_be_visible()
        await message.press_sequentially(" Pick up today.")
        await expect(confirm).to_be_hidden()
        await ask.click()
        assert await count_messages(node.services, clinic.conversation_id) == 0
        assert not fake.seen(body_has("lisinopril"))

        # The second, deliberate click sends it, as SMS, and it reaches the provider.
        await confirm.click()
        sent = page.locator("#thread li")
        await expect(sent).to_have_count(1)
        await expect(sent).to_have_attribute("data-channel", "sms")
        await expect(sent.locator(".body")).to_have_text(DRAFT + " Pick up today.")
        await fake.wait_for(carrying("lisinopril"), timeout=QUIET_SECONDS)
        (request,) = fake.seen(body_has("lisinopril"))
        assert request.form["Body"] == DRAFT + " Pick up today."
        await expect(alert).to_be_hidden()
        await expect(message).to_have_value("")
        await expect(page.locator("#sms-warning")).to_be_visible()
        assert await count_messages(node.services, clinic.conversation_id) == 1


async def test_portal_back_lifts_the_hold(node: Node, clinic: Clinic, browser: Any,
                                          fake: FakeTwilio) -> None:
    async with held_draft(browser, node, clinic) as (page, admin):
        await set_portal(admin, True)
        switch = page.get_by_role("switch", name="Secure Chat")
        await expect(switch).to_be_checked()
        await expect(page.locator("#held-draft")).to_be_hidden()
        await expect(page.locator("#composer")).not_to_have_attribute("data-held", "")
        await expect(page.get_by_label("Message")).to_have_value(DRAFT)
        await page.get_by_label("Message").press("Enter")
        sent = page.locator("#thread li")
        await expect(sent).to_have_attribute("data-channel", "secure")
        await expect(sent).to_have_attribute("data-status", "notified")
        await expect(switch).not_to_be_checked()  # this message only, as before
        # The patient's text holds a link, never the message.
        assert fake.seen() and not fake.seen(body_has("lisinopril"))


async def test_emptying_the_box_lifts_the_hold(node: Node, clinic: Clinic, browser: Any,
                                               fake: FakeTwilio) -> None:
    async with held_draft(browser, node, clinic) as (page, _):
        await page.get_by_role("button", name="Discard the draft").click()
        await expect(page.locator("#held-draft")).to_be_hidden()
        await expect(page.get_by_label("Message")).to_have_value("")
        await expect(page.get_by_label("Message")).to_be_focused()
        # What is typed next is a new draft, written for SMS: Enter sends it.
        await page.get_by_label("Message").fill("See you Monday at 9.")
        await page.get_by_label("Message").press("Enter")
        await expect(page.locator("#thread li")).to_have_attribute("data-channel", "sms")
        await fake.wait_for(carrying("See you Monday"), timeout=QUIET_SECONDS)


async def test_queued_secure_send_refused_on_reconnect_is_held(
        database_url: str, master_key: bytes, clock: FakeClock, services: Services,
        clinic: Clinic, browser: Any, fake: FakeTwilio) -> None:
    """Sent with Secure Chat while the server was down; the portal went off meanwhile.
    On reconnect the socket resends it as it was (secure), the server refuses it, and its
    text comes back to the composer, held and explained: nothing goes out as SMS."""
    async with browser_page(browser) as page:
        async with run_node(database_url, master_key, clock, **twilio(fake)) as first:
            port = first.port
            await page.goto(f"{first.url}/")
            await sign_in(page, clinic.staff_email)
            await open_thread(page, clinic.conversation_id)
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", re.compile("offline|connecting"))
        await page.get_by_role("switch", name="Secure Chat").check()
        await page.get_by_label("Message").fill(DRAFT)
        await page.get_by_label("Message").press("Enter")
        waiting = page.locator("#thread li.pending")
        await expect(waiting).to_have_attribute("data-channel", "secure")
        await expect(waiting.locator(".status")).to_have_text("Waiting to send")
        async with services.db.write() as conn:  # the node's own store closed with it
            await conn.execute(update(accounts).where(accounts.c.id == clinic.account_id)
                               .values(portal_active=False))

        async with run_node(database_url, master_key, clock, port=port,
                            **twilio(fake)) as second:
            refused = page.locator("#thread li.failed")
            await expect(refused.locator(".status")).to_have_text(
                "Not sent: Secure Chat is turned off for this clinic.", timeout=RECONNECT_MS)
            await expect(refused).to_have_attribute("data-channel", "secure")
            await expect(page.get_by_label("Message")).to_have_value(DRAFT)
            await expect(page.locator("#held-draft .held-why")).to_have_text(HELD)
            await expect(page.get_by_role("switch", name="Secure Chat")).to_have_count(0)
            await page.get_by_label("Message").press("Enter")
            await expect(page.get_by_role("button", name="Send as SMS instead…")
                         ).to_be_focused()
            await assert_never_sent(fake, "lisinopril")
            assert await count_messages(second.services, clinic.conversation_id) == 0


async def test_held_composer_screenshots(node: Node, clinic: Clinic, browser: Any,
                                         tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    for viewport, name in (({"width": 1280, "height": 800}, "staff-composer-held.png"),
                           (PHONE_VIEWPORT, "staff-composer-held-390.png")):
        async with held_draft(browser, node, clinic, viewport=viewport) as (page, admin):
            await page.get_by_label("Message").press("Enter")  # as the staff member would
            await expect(page.get_by_role("button", name="Send as SMS instead…")
                         ).to_be_focused()
            await page.mouse.move(0, viewport["height"] - 10)
            await page.screenshot(path=str(out / name), animations="disabled")
            await set_portal(admin, True)  # the next picture starts from the portal on
        assert (out / name).stat().st_size > 10_000
