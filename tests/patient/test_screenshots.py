"""Phone-width screenshots of the verification page, the thread and the locked page.

They are written to ``$SCREENSHOTS_DIR`` when it is set (``SCREENSHOTS_DIR=docs/screenshots``
refreshes the ones the docs show), else to the test's temporary folder: the suite never
writes into the checkout by itself. The walk through the pages is checked as it goes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import Clinic
from tests.patient.support import DOB, WRONG_DOB, Node, new_link
from tests.realtime.wsclient import connect, staff_cookie


def screenshots_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("SCREENSHOTS_DIR")
    target = Path(chosen) if chosen else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_phone_screenshots(node: Node, clinic: Clinic, phone: Any,
                                 tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    body = ("Hi Pat, your blood test results are back and everything looks normal. "
            "Dr. Rivera would like to see you in 6 months.")
    async with node.login(clinic.staff_email) as api:
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": "shot-1", "body": body,
                                        "secure": True})
        assert response.status_code == 201

    await phone.goto(f"{node.url}/s/{await new_link(node, clinic)}")
    await expect(phone.get_by_label("Date of birth")).to_be_focused()
    await phone.screenshot(path=str(out / "patient-verify.png"))

    async with connect(node.url, await staff_cookie(node, clinic.staff_email)) as staff:
        await staff.wait_type("ready")
        await staff.send(type="subscribe", ref="s", conversation_id=clinic.conversation_id)
        await staff.wait_type("subscribed", ref="s")
        await phone.get_by_label("Date of birth").fill(DOB)
        await phone.get_by_role("button", name="Continue").click()
        await expect(phone.locator("#thread li.theirs .body")).to_have_text([body])
        await phone.get_by_label("Your reply").fill("Thank you! That's a relief.")
        await phone.get_by_label("Your reply").press("Enter")
        await staff.wait_type("message", body="Thank you! That's a relief.")
        await expect(phone.locator("#thread li.mine .status")).to_have_text(["Sent"])
        await expect(phone.locator("#thread li.mine time")).not_to_have_text("")
    await phone.screenshot(path=str(out / "patient-thread.png"))

    await phone.context.clear_cookies()
    await phone.goto(f"{node.url}/s/{await new_link(node, clinic)}")
    for attempt in range(1, 6):
        await phone.get_by_label("Date of birth").fill(WRONG_DOB)
        async with phone.expect_response(re.compile(r"/verify$")) as answer:
            await phone.get_by_role("button", name="Continue").click()
        assert (await answer.value).status == (423 if attempt == 5 else 401)
        await phone.wait_for_load_state()
        if attempt < 5:
            await expect(phone.get_by_role("alert")).to_contain_text("does not match")
            await expect(phone.get_by_label("Date of birth")).to_be_focused()
    await expect(phone.get_by_role("heading", name="This link is locked")).to_be_visible()
    await phone.screenshot(path=str(out / "patient-locked.png"))
