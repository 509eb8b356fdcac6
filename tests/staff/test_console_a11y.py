"""The console's accessibility and layout in real headless Chromium: landmarks and
names, a keyboard-only send with a visible focus ring at every stop, AA contrast of every
piece of text (sign-in, inbox, a thread with both kinds of message, the idle warning), and
the 768 px layout (one pane at a time, no horizontal scroll). Also the shell's headers:
served like every other page, and holding no PHI."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from server.clock import FakeClock
from tests.conftest import Clinic
from tests.patient.support import Node
from tests.patient.test_accessibility import CONTRAST, FOCUS_RING, contrast
from tests.staff.support import (
    TABLET,
    add_patient,
    browser_page,
    console,
    inbound_sms,
    open_thread,
    opt_out,
    publish_send,
    row,
    unknown_patient,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# No horizontal scrolling: nothing is wider than the viewport.
NO_SIDEWAYS_SCROLL = """() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll("body *")].filter((el) => {
    const box = el.getBoundingClientRect();
    return el.getClientRects().length && box.right > root.clientWidth + 0.5;
  }).map((el) => `${el.tagName}.${el.className}`);
  return { scroll: root.scrollWidth - root.clientWidth, wide };
}"""


async def assert_focus_ring(page: Any, locator: Any, ring_of: Any = None) -> None:
    """``locator`` has the focus and a visible ring (on itself, or on ``ring_of``, the
    box drawn around it)."""
    await expect(locator).to_be_focused()
    ring = await (ring_of or locator).evaluate(FOCUS_RING)
    assert ring["style"] == "solid" and ring["width"] >= 2, ring
    assert contrast(ring["color"]) >= 3, ring


async def tab_to(page: Any, target: Any, limit: int = 40) -> None:
    """Press Tab until ``target`` has the focus (checking the ring at every stop)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await target.evaluate("(el) => el === document.activeElement"):
            return
        focused = page.locator(":focus")
        if await focused.count() and await focused.evaluate(
                "(el) => el.tagName !== 'TEXTAREA'"):
            ring = await focused.evaluate(FOCUS_RING)
            assert ring["style"] == "solid" and ring["width"] >= 2, ring
    raise AssertionError("Tab never reached the target")


async def assert_readable(page: Any) -> None:
    assert await page.evaluate(CONTRAST) == []


async def test_shell_headers_and_no_phi(node: Node, clinic: Clinic) -> None:
    async with httpx.AsyncClient(base_url=node.url) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    headers = response.headers
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "<script>" not in response.text and "style=" not in response.text
    assert "Pat Example" not in response.text and "Clinic " not in response.text


async def test_keyboard_only_send(node: Node, clinic: Clinic, browser: Any) -> None:
    async with console(browser, node, clinic.staff_email) as page:
        await page.get_by_role("button", name="Sign out").focus()
        link = row(page, clinic.conversation_id).get_by_role("link")
        await tab_to(page, link)
        await assert_focus_ring(page, link)
        await page.keyboard.press("Enter")
        message = page.get_by_label("Message")
        await expect(page.locator("#thread-title")).to_have_text("Pat Example")
        await assert_focus_ring(page, message, page.locator(".compose-box"))
        await page.keyboard.type("Sent without a mouse")
        await page.keyboard.press("Enter")
        await expect(page.locator("#thread li[data-seq] .body")).to_have_text(
            ["Sent without a mouse"])
        # The switch, by keyboard: Space turns it on; the message goes secure.
        switch = page.get_by_role("switch", name="Secure Chat")
        await tab_to(page, switch)
        await assert_focus_ring(page, switch)
        await page.keyboard.press("Space")
        await expect(switch).to_be_checked()
        await page.keyboard.press("Shift+Tab")
        await expect(message).to_be_focused()
        await page.keyboard.type("Secure, by keyboard")
        await page.keyboard.press("Enter")
        await expect(page.locator("#thread li[data-seq][data-channel=secure] .body")
                     ).to_have_text(["Secure, by keyboard"])
        send = page.get_by_role("button", name="Send", exact=True)
        await tab_to(page, send)
        await assert_focus_ring(page, send)


async def test_contrast_everywhere(node: Node, clinic: Clinic, browser: Any,
                                   clock: FakeClock) -> None:
    stopped = await add_patient(node, clinic, "Sam Stopped", "+14155550102")
    await opt_out(node, stopped)
    await unknown_patient(node, clinic, "+14155550103")
    clock.advance(minutes=1)
    await inbound_sms(node, clinic, clinic.conversation_id, clinic.patient_id,
                      "Is my prescription ready?")
    async with browser_page(browser) as page:
        await page.goto(f"{node.url}/")
        await expect(page.get_by_label("Email")).to_be_focused()
        assert await page.get_attribute("html", "lang") == "en"
        await page.get_by_label("Email").fill(clinic.staff_email)
        await page.get_by_label("Password").fill("wrong password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        await assert_readable(page)
        await assert_focus_ring(page, page.get_by_label("Password"))

    async with console(browser, node, clinic.staff_email) as page:
        await expect(row(page, clinic.conversation_id).locator(".unread")).to_have_text("1")
        assert await page.get_by_role("heading", level=1).count() == 1
        assert await page.get_by_role("main").count() == 1
        await assert_readable(page)
        await page.get_by_role("button", name="Add patient").click()
        await page.get_by_role("button", name="Add", exact=True).click()
        await expect(page.get_by_role("alert")).to_have_text("Enter the patient's name.")
        await assert_readable(page)

        await open_thread(page, clinic.conversation_id)
        await publish_send(node, clinic, clinic.conversation_id, "Yes, pick it up today.",
                           secure=False)
        await publish_send(node, clinic, clinic.conversation_id, "Your results: normal.",
                           secure=True)
        await expect(page.locator("#thread li[data-seq]")).to_have_count(3)
        await page.get_by_label("Message").fill("Typing an SMS")
        await expect(page.locator("#segments")).to_be_visible()
        await assert_readable(page)
        await page.get_by_role("switch", name="Secure Chat").check()
        await assert_readable(page)
        await open_thread(page, stopped)
        await expect(page.locator("#opted-out")).to_be_visible()
        await assert_readable(page)


async def test_idle_warning_is_readable(database_url: str, master_key: bytes,
                                        clock: FakeClock, clinic: Clinic,
                                        browser: Any) -> None:
    from tests.patient.support import run_node

    async with run_node(database_url, master_key, clock, session_idle_seconds=4) as node, \
            console(browser, node, clinic.staff_email) as page:
        warning = page.get_by_role("alertdialog", name="Still there?")
        await expect(warning).to_be_visible()
        await assert_readable(page)
        await assert_focus_ring(page, warning.get_by_role("button", name="Stay signed in"))


async def test_768_one_pane_at_a_time(node: Node, clinic: Clinic, browser: Any) -> None:
    await add_patient(node, clinic, "Alexandria Montgomery-Fitzgerald", "+14155550104")
    await publish_send(node, clinic, clinic.conversation_id,
                       "A long line without spaces: " + "x" * 300, secure=False)
    async with console(browser, node, clinic.admin_email, viewport=TABLET) as page:
        inbox, thread = page.locator(".inbox-pane"), page.locator(".thread-pane")
        await expect(inbox).to_be_visible()
        await expect(thread).to_be_hidden()
        assert await page.evaluate(NO_SIDEWAYS_SCROLL) == {"scroll": 0, "wide": []}
        await assert_readable(page)

        await open_thread(page, clinic.conversation_id)
        await expect(thread).to_be_visible()
        await expect(inbox).to_be_hidden()
        await page.get_by_label("Message").fill("Hello")
        await expect(page.locator("#segments")).to_be_visible()
        assert await page.evaluate(NO_SIDEWAYS_SCROLL) == {"scroll": 0, "wide": []}
        await assert_readable(page)

        back = page.get_by_role("link", name="Back to inbox")
        await back.click()
        await expect(inbox).to_be_visible()
        await expect(thread).to_be_hidden()
