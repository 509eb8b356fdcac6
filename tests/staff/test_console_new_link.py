"""The console's "Send a new link" (issue 13): the "Link locked" banner, raised by five
real wrong dates of birth, offers the button; clicking it texts a new link (the
simulator receives it, and it opens with the right date) and says so; the button in
the thread header says when the hourly limit stops it. Screenshots of the banner at 1280
and 390 px (``staff-link-locked.png``, ``staff-link-locked-390.png``) go to
``$SCREENSHOTS_DIR`` as in test_console_screenshots.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from loadtest.nodes import poll
from server.services.links import MAX_FAILURES, MAX_RESENDS_PER_HOUR
from server.web.context import app_runtime
from tests.conftest import make_clinic
from tests.patient.support import (
    DOB,
    PHONE_VIEWPORT,
    TOKEN,
    WRONG_DOB,
    Node,
    new_link,
    verify,
)
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.support import console, open_thread

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
NEW_LINK = re.compile(rf"here is a new link to your secure messages: \S+/s/({TOKEN})$")


async def new_link_tokens(node: Node, account_id: str) -> list[str]:
    """The tokens of the "new link" SMS the simulator received for the account."""
    inbox = await app_runtime(node.app).sms_provider.inbox()
    return [match.group(1) for sms in inbox if sms["account_id"] == account_id
            for match in [NEW_LINK.search(sms["body"])] if match]


async def test_the_lock_banner_sends_a_new_link(node: Node, browser: Any,
                                                tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    clinic = await make_clinic(node.services, patient_name="Maria Lopez")
    old = await new_link(node, clinic)
    async with (console(browser, node, clinic.staff_email) as page,
                console(browser, node, clinic.staff_email, viewport=PHONE_VIEWPORT) as phone):
        for view in (page, phone):
            await open_thread(view, clinic.conversation_id)
        async with node.client() as patient:
            for _ in range(MAX_FAILURES):
                await verify(patient, old, WRONG_DOB)  # the fifth locks: staff are told
        banners = [view.get_by_role("alert").filter(has_text="Link locked")
                   for view in (page, phone)]
        for banner in banners:
            await expect(banner).to_contain_text("5 wrong date-of-birth attempts")
            await expect(banner).not_to_contain_text("Send a new Secure Chat message")
            await expect(banner.get_by_role("button", name="Send a new link")).to_be_enabled()
        await page.screenshot(path=str(out / "staff-link-locked.png"))
        await phone.screenshot(path=str(out / "staff-link-locked-390.png"))
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE_VIEWPORT["width"], "the banner widens the page at 390 px"

        await banners[0].get_by_role("button", name="Send a new link").click()
        await expect(banners[0].locator(".new-link-status")).to_have_text(
            "New link sent by text.")
        # The other console hears of it too (``link_resent`` notice).
        await expect(banners[1].locator(".new-link-status")).to_have_text(
            "New link sent by text.")

        async def texted() -> bool:
            return len(await new_link_tokens(node, clinic.account_id)) == 1
        await poll(texted, 5, "the new link SMS")
        [fresh] = await new_link_tokens(node, clinic.account_id)
        async with node.client() as patient:
            assert (await verify(patient, fresh, DOB)).status_code == 204
            assert (await verify(patient, old, DOB)).status_code == 423

        header = page.locator(".thread-head")
        button = header.get_by_role("button", name="Send a new link")
        status = header.locator(".new-link-status")
        for _ in range(MAX_RESENDS_PER_HOUR - 1):
            await button.click()
            await expect(status).to_have_text("New link sent by text.")
            await expect(button).to_be_enabled()
            await status.evaluate("el => { el.textContent = ''; }")  # tell clicks apart
        await button.click()
        await expect(status).to_have_text(re.compile(
            r"^Not sent: the hourly limit of new links is reached\. Try again in \d+ min\.$"))
