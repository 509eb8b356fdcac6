"""STOP made visible in real Chromium (issue 13, acceptance 3): the patient texts STOP
and, without a reload, both staff consoles show it (the inbox tag, which stays when the
thread is opened; the thread header; the note above the composer with the date); a
secure message afterwards says it was not announced; START undoes it all, live.
Screenshots at 1280 and 390 px go to ``$SCREENSHOTS_DIR`` (see
``tests/staff/test_console_screenshots.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server.clock import FakeClock
from tests.conftest import Clinic
from tests.patient.support import PHONE_VIEWPORT, Node
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.support import console, inbound_sms, open_thread, publish_send, row

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

NOT_NOTIFIED = "Not notified: the patient replied STOP, so no text tells them about it"


async def test_stop_shows_live_on_both_consoles(node: Node, clinic: Clinic, browser: Any,
                                                clock: FakeClock, tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    pat = clinic.conversation_id
    clock.advance(days=336, hours=4)  # 2026-12-03, 13:00 UTC (the browsers run in UTC)
    await publish_send(node, clinic, pat, "Reminder: your appointment is Friday at 10:30. "
                       "Reply C to confirm.", secure=False)
    clock.advance(minutes=5)
    await inbound_sms(node, clinic, pat, clinic.patient_id, "C")
    async with console(browser, node, clinic.admin_email) as first, \
            console(browser, node, clinic.staff_email) as second:
        for page in (first, second):
            await page.evaluate("window.notReloaded = true")  # a reload would lose it
        await open_thread(first, pat)
        await expect(first.locator("#opted-out")).to_be_hidden()
        await expect(row(second, pat).locator(".tag")).to_have_count(0)

        clock.advance(minutes=5)
        await inbound_sms(node, clinic, pat, clinic.patient_id, "STOP")
        for page in (first, second):
            await expect(row(page, pat).locator(".tag")).to_have_text(["Opted out"])
        await expect(first.locator("#thread-opted-out")).to_have_text("Opted out of SMS")
        await expect(first.locator("#thread-opted-out")).to_have_attribute(
            "title", "Replied STOP on December 3, 2026")
        await expect(first.locator("#opted-out")).to_have_text(
            "Replied STOP on December 3, 2026: no SMS; secure messages cannot be "
            "announced by text.")

        # Opening the thread (which reads it, and so sends a new inbox frame) keeps
        # the tag.
        await open_thread(second, pat)
        await expect(second.locator("#thread-opted-out")).to_be_visible()
        await expect(row(second, pat).locator(".tag")).to_have_text(["Opted out"])

        # Only Secure Chat is left, and its message cannot be announced.
        clock.advance(minutes=2)
        switch = first.get_by_role("switch", name="Secure Chat")
        await expect(switch).to_be_checked()
        await first.get_by_label("Message").fill(
            "Your lab results are ready. Please call us to go over them.")
        await first.get_by_label("Message").press("Enter")
        for page in (first, second):
            sent = page.locator("#thread li[data-channel=secure]").last
            await expect(sent).to_have_attribute("data-status", "not_notified")
            await expect(sent.locator(".status")).to_have_text(NOT_NOTIFIED)

        await first.get_by_label("Message").blur()
        await first.mouse.move(0, 790)  # no hover highlight in the picture
        await first.screenshot(path=str(out / "staff-opted-out.png"), animations="disabled")

        clock.advance(minutes=1)  # (sessions idle out after 15 minutes of the clock)
        await inbound_sms(node, clinic, pat, clinic.patient_id, "START")
        for page in (first, second):
            await expect(row(page, pat).locator(".tag")).to_have_count(0)
            await expect(page.locator("#thread-opted-out")).to_have_count(0)
            await expect(page.locator("#opted-out")).to_be_hidden()
            # The message stays as it was: it was never announced.
            await expect(page.locator("#thread li[data-channel=secure] .status")).to_have_text(
                [NOT_NOTIFIED])
            assert await page.evaluate("window.notReloaded") is True
    assert (out / "staff-opted-out.png").stat().st_size > 10_000


async def test_opted_out_thread_at_phone_width(node: Node, clinic: Clinic, browser: Any,
                                               clock: FakeClock, tmp_path: Path) -> None:
    """The same thread at 390 px: the header tag and the note fit, nothing overflows.
    Reloaded, the stored ``not_notified`` (history carries no error code) still says
    the message was not announced."""
    out = screenshots_dir(tmp_path)
    pat = clinic.conversation_id
    clock.advance(days=336, hours=4)
    await inbound_sms(node, clinic, pat, clinic.patient_id, "STOP")
    async with console(browser, node, clinic.staff_email, viewport=PHONE_VIEWPORT) as page:
        await open_thread(page, pat)
        await expect(page.locator("#thread-opted-out")).to_have_text("Opted out of SMS")
        await expect(page.locator("#opted-out")).to_contain_text(
            "secure messages cannot be announced by text.")
        clock.advance(minutes=3)
        await publish_send(node, clinic, pat, "Your lab results are ready. Please call us "
                           "to go over them.", secure=True)
        status = page.locator("#thread li[data-channel=secure] .status")
        await expect(status).to_have_text(NOT_NOTIFIED)
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth")
        # The tag wraps inside the header rather than running off the screen.
        # The header's tag stays (the thread was read meanwhile, which sends a new inbox
        # frame) and is on screen (read in one go: the header is redrawn on news).
        await expect(page.locator("#thread-opted-out")).to_be_visible()
        right = await page.evaluate(
            "document.querySelector('#thread-opted-out').getBoundingClientRect().right")
        assert 0 < right <= PHONE_VIEWPORT["width"]
        await page.get_by_label("Message").blur()
        await page.mouse.move(0, 0)
        await page.screenshot(path=str(out / "staff-opted-out-390.png"),
                              animations="disabled")

        await page.reload()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "online")
        await expect(page.locator("#thread li[data-channel=secure] .status")).to_have_text(
            "Not notified: no text could tell the patient about it")
    assert (out / "staff-opted-out-390.png").stat().st_size > 10_000
