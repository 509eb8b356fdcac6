"""Signing in and out of the console in real headless Chromium: a wrong password, the
"Sign out" button, the idle warning and the automatic sign-out at the idle limit, and a
session ended elsewhere (logout in another client, deactivation) closing the open console
(WebSocket close 4401). Every way out leaves no patient data on the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server.clock import FakeClock
from tests.conftest import PASSWORD, Clinic
from tests.patient.support import Node, run_node
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.support import (
    browser_page,
    console,
    open_staff_sessions,
    open_thread,
    publish_send,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PHONE = {"width": 390, "height": 844}
IDLE_SECONDS = 6  # the warning shows min(60, 6/2) = 3 s before the limit


async def assert_signed_out(page: Any, reason: str) -> None:
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await expect(page.get_by_role("status")).to_have_text(reason)
    await expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    assert await page.locator("#inbox, #thread").count() == 0
    assert "Pat Example" not in await page.content()


async def test_wrong_password_then_sign_in_and_out(node: Node, clinic: Clinic,
                                                   browser: Any) -> None:
    async with browser_page(browser) as page:
        await page.goto(f"{node.url}/")
        await expect(page.get_by_label("Email")).to_be_focused()
        await page.get_by_label("Email").fill(clinic.staff_email)
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "That email and password don't match an active account.")
        await expect(page.get_by_label("Password")).to_be_focused()
        await sign_in(page, clinic.staff_email)
        nav = page.get_by_role("navigation", name="Main")
        # A staff member sees no admin pages.
        await expect(nav.get_by_role("link")).to_have_text(["Inbox"])
        await open_thread(page, clinic.conversation_id)

        await nav.get_by_role("button", name="Sign out").click()
        await assert_signed_out(page, "You signed out.")
        assert await open_staff_sessions(node.services, clinic.staff_id) == 0
        # A reload stays signed out.
        await page.reload()
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()


async def test_idle_warning_then_automatic_sign_out(database_url: str, master_key: bytes,
                                                    clock: FakeClock, clinic: Clinic,
                                                    browser: Any) -> None:
    async with run_node(database_url, master_key, clock,
                        session_idle_seconds=IDLE_SECONDS) as node, \
            console(browser, node, clinic.staff_email) as page:
        await open_thread(page, clinic.conversation_id)
        warning = page.get_by_role("alertdialog", name="Still there?")
        await expect(warning).to_be_visible(timeout=IDLE_SECONDS * 1000)
        await expect(warning).to_contain_text(re.compile(r"signed out in 0:0[0-3]"))
        stay = warning.get_by_role("button", name="Stay signed in")
        await expect(stay).to_be_focused()
        async with page.expect_response(re.compile(r"/api/me$")) as answer:
            await stay.click()
        response = await answer.value
        assert response.status == 200
        assert await response.request.header_value("x-securechat-background") is None
        await expect(warning).to_be_hidden()
        await expect(page.locator("#thread-title")).to_have_text("Pat Example")

        # No more input: the warning comes back, then the console signs out by itself.
        await expect(warning).to_be_visible(timeout=IDLE_SECONDS * 1000)
        await assert_signed_out(page, f"You were signed out after {IDLE_SECONDS} seconds "
                                "without activity.")
        assert await open_staff_sessions(node.services, clinic.staff_id) == 0


async def test_session_ended_elsewhere_closes_the_console(node: Node, clinic: Clinic,
                                                          browser: Any) -> None:
    """The session's own cookie signs out from another client: the server closes the
    console's socket with 4401 and the console asks to sign in again."""
    async with console(browser, node, clinic.staff_email) as page:
        await open_thread(page, clinic.conversation_id)
        await publish_send(node, clinic, clinic.conversation_id, "A private note",
                           secure=True)
        await expect(page.locator("#thread li .body")).to_have_text(["A private note"])
        response = await page.context.request.post(f"{node.url}/api/auth/logout",
                                                   headers={"origin": node.url})
        assert response.status == 204
        await assert_signed_out(page, "Your session ended. Sign in again.")
        assert "A private note" not in await page.content()


DEACTIVATED = "Your account was deactivated by an administrator."


async def test_deactivated_member_is_told_so(node: Node, clinic: Clinic, browser: Any,
                                             tmp_path: Path) -> None:
    """Deactivated while the console is open (at 390 px): it is signed out at once and
    says the account was deactivated, not "sign in again"; a wrong password then gets
    the usual answer (no enumeration), the right one says deactivated again."""
    async with console(browser, node, clinic.staff_email, viewport=PHONE) as page, \
            node.login(clinic.admin_email) as admin:
        await open_thread(page, clinic.conversation_id)
        response = await admin.post(f"/api/staff/{clinic.staff_id}/deactivate")
        assert response.status_code == 200, response.text
        await assert_signed_out(page, DEACTIVATED)
        await sign_in_with(page, clinic.staff_email, "not the password, but long enough")
        await expect(page.get_by_role("alert")).to_contain_text("don't match")
        await sign_in_with(page, clinic.staff_email, PASSWORD)
        await expect(page.get_by_role("alert")).to_contain_text(DEACTIVATED)
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        out = screenshots_dir(tmp_path)
        await page.screenshot(path=str(out / "staff-deactivated-390.png"),
                              animations="disabled", full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.screenshot(path=str(out / "staff-deactivated-1280.png"),
                              animations="disabled")


async def sign_in_with(page: Any, email: str, password: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()

