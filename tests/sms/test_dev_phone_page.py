"""The demo's ``/dev/phone`` drawn as a phone's messages app, in headless Chromium: both
directions (what the simulator delivered, the patient's own replies sent from the page),
readable local times, links that wrap at 390 px, one card per phone; plus the pure
arrangement of threads. Screenshots ``dev-phone.png`` and ``dev-phone-390.png``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import CreatePatientRequest
from server.services.handsets import Reply, arrange
from server.store import migrate
from server.store.tables import accounts
from tests.conftest import make_clinic
from tests.patient.support import PHONE_VIEWPORT, TOKEN, Node, run_node
from tests.patient.test_screenshots import screenshots_dir
from tests.sms.support import sent_ok, staff_socket

DESKTOP = {"width": 1280, "height": 800}
# 1:05 PM in Los Angeles (the browser's zone below): "Today 1:05 PM" on the page.
NOW = datetime(2026, 12, 3, 21, 5, tzinfo=UTC)
ZONE = "America/Los_Angeles"
CLINIC_NUMBER = "+12025550142"
ALEX, SAM = "+14155550134", "+14155550178"


# --- the arrangement (pure) ---------------------------------------------------------------

def _received(to: str, from_: str, minute: int, body: str, account: str = "a1") -> dict:
    return {"to": to, "from": from_, "account_id": account, "body": body,
            "at": NOW + timedelta(minutes=minute)}


def test_arrange_threads_both_directions() -> None:
    """Each phone gets a thread per number that texted it, oldest first, with its
    replies to that account in the thread of the number the account last used; the
    phone and the thread with the latest activity come first."""
    received = [_received(ALEX, CLINIC_NUMBER, 0, "first"),
                _received(SAM, CLINIC_NUMBER, 1, "to Sam"),
                _received(ALEX, "+14155550199", 2, "other clinic", account="a2"),
                _received(ALEX, CLINIC_NUMBER, 5, "second")]
    replies = [Reply(ALEX, "a1", NOW + timedelta(minutes=5), "answer"),
               Reply(ALEX, "a1", NOW + timedelta(minutes=3), "early answer"),
               Reply(SAM, "a2", NOW, "to an account that never texted Sam")]
    alex, sam = arrange(received, replies)
    assert (alex.number, sam.number) == (ALEX, SAM)
    mine, other = alex.threads
    assert mine.other == CLINIC_NUMBER and other.other == "+14155550199"
    assert [(b.body, b.sent) for b in mine.bubbles] == [
        ("first", False), ("early answer", True), ("second", False), ("answer", True)]
    assert [(b.body, b.sent) for b in sam.threads[0].bubbles] == [("to Sam", False)]


def test_arrange_nothing() -> None:
    assert arrange([], [Reply(ALEX, "a1", NOW, "x")]) == []


# --- the page in Chromium -----------------------------------------------------------------

@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW - timedelta(days=1, hours=3))


@pytest.fixture
def own_database(tmp_path: Path) -> str:
    """A database of this test's own: the page shows every phone the simulator ever
    texted, and the session's shared databases hold other tests' phones."""
    url = f"sqlite:///{tmp_path / 'phones.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
async def node(own_database: str, master_key: bytes, clock: FakeClock
               ) -> AsyncIterator[Node]:
    async with run_node(own_database, master_key, clock, demo=True) as running:
        yield running


async def _delivered(node: Node, email: str, conversation_id: str, body: str, ref: str,
                     *, secure: bool = False) -> None:
    async with staff_socket(node, email, conversation_id) as ws, \
            node.login(email) as client:
        message = await sent_ok(client, conversation_id, body, ref, secure=secure)
        await ws.wait_type("status", message_id=message["id"],
                           status="notified" if secure else "delivered")


async def test_phone_page_reads_like_a_messages_app(node: Node, clock: FakeClock,
                                                    browser: Any, tmp_path: Path) -> None:
    services = node.services
    clinic = await make_clinic(services, patient_name="Alex Rivera", phone=ALEX)
    async with services.db.write() as conn:  # its own number, as an operator assigns it
        await conn.execute(update(accounts).where(accounts.c.id == clinic.account_id)
                           .values(sms_number=CLINIC_NUMBER,
                                   clinic_name="Riverside Family Practice"))
    _, sam_conversation = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Sam Chen", SAM, "1991-11-02"), SYSTEM)

    # Yesterday: a reminder, and Alex's answer from the phone (below, through the page).
    await _delivered(node, clinic.staff_email, clinic.conversation_id,
                     "Hi Alex, a reminder of your appointment tomorrow at 10:30 AM with "
                     "Dr. Rivera. Directions: https://maps.example.com/riverside-family-"
                     "practice/entrance-b?from=parking-level-2&accessible=1", "r1")
    clock.advance(days=1, hours=3)  # today, 1:05 PM in Los Angeles
    await _delivered(node, clinic.staff_email, sam_conversation,
                     "Hi Sam, your flu shot is ready. Walk in any weekday 8-5.", "f1")
    await _delivered(node, clinic.staff_email, clinic.conversation_id,
                     "Your lab results are ready to view.", "s1", secure=True)
    assert clock.now() == NOW
    clock.advance(minutes=4)  # the patient reads it, then answers

    out = screenshots_dir(tmp_path)
    context = await browser.new_context(viewport=DESKTOP, timezone_id=ZONE, locale="en-US")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    try:
        await page.goto(f"{node.url}/dev/phone")
        alex = page.get_by_role("region", name="Phone +1 415-555-0134")
        sam = page.get_by_role("region", name="Phone +1 415-555-0178")
        await expect(alex).to_be_visible()
        await expect(sam).to_be_visible()
        # The patient answers from the phone: it is sent through the inbound path and
        # shows on the right, as the phone's own text.
        async with staff_socket(node, clinic.staff_email, clinic.conversation_id) as ws:
            box = alex.get_by_label("Reply as +1 415-555-0134 to +1 202-555-0142")
            await box.fill("Thanks, opening it now")
            await box.press("Enter")
            frame = await ws.wait_type("message", body="Thanks, opening it now")
            assert (frame["direction"], frame["channel"]) == ("inbound", "sms")
        await expect(page).to_have_url(f"{node.url}/dev/phone#phone-14155550134")
        await expect(alex.locator("li.out p")).to_have_text(["Thanks, opening it now"])
        received = alex.locator("li.in p")
        await expect(received).to_have_count(2)
        await expect(received.nth(1)).to_contain_text("you have a new secure message")
        await expect(received.nth(1).get_by_role("link")).to_have_attribute(
            "href", re.compile(rf"^{re.escape(node.url)}/s/{TOKEN}$"))
        # Readable local times: yesterday's reminder and today's texts (13:05 local).
        await expect(alex.locator("li.stamp")).to_have_text(
            ["Yesterday 10:05 AM", "Today 1:05 PM"])
        await expect(sam.locator("li.stamp")).to_have_text(["Today 1:05 PM"])
        # Bubbles: received on the left, sent on the right.
        left = await received.first.bounding_box()
        right = await alex.locator("li.out p").bounding_box()
        card = await alex.bounding_box()
        assert left["x"] - card["x"] < 30
        assert card["x"] + card["width"] - (right["x"] + right["width"]) < 30
        await page.mouse.move(1, 790)
        await page.screenshot(path=str(out / "dev-phone.png"), full_page=True)

        await page.set_viewport_size(PHONE_VIEWPORT)
        await page.goto(f"{node.url}/dev/phone")
        await expect(alex.locator("li.stamp").first).to_have_text("Yesterday 10:05 AM")
        # Nothing is wider than the phone: the long link wraps inside its bubble.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        link = await alex.locator("li.in a").first.bounding_box()
        assert link["x"] + link["width"] <= 390
        await page.screenshot(path=str(out / "dev-phone-390.png"))
        assert problems == []
    finally:
        await context.close()

