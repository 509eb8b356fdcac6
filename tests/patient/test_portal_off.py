"""The patient's page when the clinic turns secure messaging off while it is open (issue
13): the page empties at once and says to call the clinic, with nothing left to send
from; reloading, or opening the link, shows the same neutral page. Screenshot at 390 px:
``patient-portal-off.png`` (to ``$SCREENSHOTS_DIR``, as test_screenshots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server.audit import SYSTEM
from server.protocol import SettingsUpdate
from tests.conftest import ORIGIN, Clinic
from tests.patient.support import DOB, Node, new_link
from tests.patient.test_screenshots import screenshots_dir


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_open_page_says_secure_messaging_is_off(node: Node, clinic: Clinic,
                                                          phone: Any, tmp_path: Path
                                                          ) -> None:
    clinic_name = "Riverside Family Clinic"
    await node.services.accounts.update_settings(
        clinic.account_id, SettingsUpdate(clinic_name=clinic_name), SYSTEM)
    token = await new_link(node, clinic)
    await phone.goto(f"{node.url}/s/{token}")
    await phone.get_by_label("Date of birth").fill(DOB)
    await phone.get_by_role("button", name="Continue").click()
    await expect(phone.locator("#connection")).to_have_text("Connected")
    await phone.get_by_label("Your reply").fill("Is my prescription ready?")

    async with node.login(clinic.admin_email) as admin:
        off = await admin.put("/api/account/settings", json={"portal_active": False},
                              headers={"origin": ORIGIN})
        assert off.status_code == 200, off.text

    heading = phone.get_by_role("heading", name="Secure messaging is not available")
    await expect(heading).to_be_focused()
    await expect(phone.locator("#main")).to_contain_text(f"Please call {clinic_name}.")
    await expect(phone.get_by_label("Your reply")).to_have_count(0)  # the draft is gone too
    await expect(phone.locator("#thread")).to_have_count(0)
    await phone.screenshot(path=str(screenshots_dir(tmp_path) / "patient-portal-off.png"))

    await phone.reload()
    await expect(heading).to_be_visible()
    await expect(phone.locator("#main")).to_contain_text(f"Please call {clinic_name}.")
    await phone.goto(f"{node.url}/s/{token}")
    await expect(heading).to_be_visible()
    await expect(phone.get_by_label("Date of birth")).to_have_count(0)
