"""Helpers for the admin pages' browser tests (no tests here): a signed-in console in a
browser context of its own, the admin navigation, and a check that a page raised no
script error or CSP violation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import expect

from tests.conftest import PASSWORD
from tests.patient.support import Node

DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}


@contextlib.asynccontextmanager
async def console(browser: Any, node: Node, email: str, *, viewport: dict = DESKTOP
                  ) -> AsyncIterator[Any]:
    """A fresh browser context (its own cookies) signed in to the console as ``email``;
    its page. The page must raise no script error and log no CSP violation."""
    context = await browser.new_context(viewport=viewport, timezone_id="UTC",
                                        locale="en-US", accept_downloads=True)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    try:
        await page.goto(f"{node.url}/")
        await sign_in(page, email)
        yield page
        assert problems == []
    finally:
        await context.close()


async def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(main_nav(page).get_by_role("link", name="Inbox")).to_be_visible()


def main_nav(page: Any) -> Any:
    return page.get_by_role("navigation", name="Main")


async def open_admin(page: Any, link: str, heading: str) -> None:
    """Follow the header's admin link ``link``; wait for the page's data."""
    await main_nav(page).get_by_role("link", name=link).click()
    await expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
    await expect(page.locator("#admin .admin-muted")).to_have_count(0)  # loaded


async def open_settings(page: Any) -> None:
    await open_admin(page, "Settings", "Account settings")
    await expect(page.get_by_label("Clinic name")).not_to_have_value("")


async def go(page: Any, route: str) -> None:
    """Change the console's hash route in place (no reload)."""
    await page.evaluate("(route) => { location.hash = route; }", route)
