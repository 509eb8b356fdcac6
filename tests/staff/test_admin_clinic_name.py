"""The settings page shows, under the clinic name, the text a patient actually receives:
typed in Chromium, saved, and compared with the notification the SMS simulator then
delivered for a secure message (only the link's token differs)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect

from server.web.context import app_runtime
from tests.conftest import Clinic
from tests.patient.support import TOKEN, Node
from tests.sms.support import sent_ok, staff_socket
from tests.staff.test_admin_support import console, open_settings

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_clinic_name_hint_shows_the_text_sent(node: Node, clinic: Clinic,
                                                    browser: Any) -> None:
    async with console(browser, node, clinic.admin_email) as page:
        await open_settings(page)
        name = page.get_by_label("Clinic name")
        await name.fill("Lakeside Pediatrics")
        sample = page.locator("#settings-clinic-sample")
        await expect(sample).to_have_text(
            f"Lakeside Pediatrics: you have a new secure message. View it at {node.url}/s/…")
        # The hint says which texts carry the name, and that staff's own SMS do not.
        await expect(name).to_have_accessible_description(
            re.compile(r"secure-message alerts.*texts staff write go out as typed"))
        await page.get_by_role("button", name="Save settings").click()
        await expect(page.get_by_role("status").filter(has_text="Settings saved")
                     ).to_be_visible()
        shown = await sample.text_content()

    async with staff_socket(node, clinic.staff_email, clinic.conversation_id) as ws, \
            node.login(clinic.staff_email) as client:
        message = await sent_ok(client, clinic.conversation_id, "Results are in.", "n1",
                                secure=True)
        await ws.wait_type("status", message_id=message["id"], status="notified")
    [sent] = [sms for sms in await app_runtime(node.app).sms_provider.inbox()
              if sms["account_id"] == clinic.account_id]
    assert re.sub(rf"/s/{TOKEN}$", "/s/…", sent["body"]) == shown
