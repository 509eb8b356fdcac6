"""Issue 6, acceptance 2, and the composer's other states, in real headless Chromium.

Secure Chat on: the message is marked secure, and no SMS holding its body reaches the
simulator (only the notification with a link). Off: marked SMS, its segment count and
encoding shown while typing, and the switch is off again after each send. The portal
turned off (live, by an `account` frame), an opted-out patient and an unknown number
change what can be sent, and say why."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import Clinic
from tests.patient.support import Node
from tests.staff.support import (
    add_patient,
    console,
    count_messages,
    open_thread,
    opt_out,
    simulated_sms,
    unknown_patient,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SECRET = "Your biopsy came back benign; no further treatment needed."


async def test_secure_switch_then_sms(node: Node, clinic: Clinic, browser: Any) -> None:
    async with console(browser, node, clinic.staff_email) as page:
        await open_thread(page, clinic.conversation_id)
        switch = page.get_by_role("switch", name="Secure Chat")
        message = page.get_by_label("Message")
        await expect(switch).not_to_be_checked()
        await expect(page.locator("#sms-warning")).to_contain_text("SMS is not secure")

        await switch.check()
        await expect(page.locator("#sms-warning")).to_be_hidden()
        await message.fill(SECRET)
        await expect(page.locator("#segments")).to_be_hidden()  # not an SMS
        await page.get_by_role("button", name="Send", exact=True).click()
        secure = page.locator("#thread li[data-channel=secure]")
        await expect(secure.locator(".body")).to_have_text([SECRET])
        await expect(secure.locator(".mark")).to_have_text(["Secure"])
        await expect(secure.locator(".mark svg")).to_have_count(1)  # the lock
        await expect(secure).to_have_attribute("data-direction", "outbound")
        # The patient is not on the secure page: a text with a link goes out.
        await expect(secure).to_have_attribute("data-status", "notified")
        await expect(secure.locator(".status")).to_contain_text("notified")
        await expect(switch).not_to_be_checked()  # this message only
        await expect(message).to_be_focused()
        texts = await simulated_sms(node, clinic)
        assert texts and all("you have a new secure message" in t for t in texts), texts
        assert not [t for t in texts if "biopsy" in t or SECRET in t]

        # Switch off: an SMS, with its segments and encoding shown while typing.
        await message.fill("See you Monday at 9.")
        await expect(page.locator("#sms-warning")).to_be_visible()
        await expect(page.locator("#segments")).to_have_text("1 SMS segment · GSM-7")
        await message.fill("Café closes at 5 ☕")
        await expect(page.locator("#segments")).to_have_text("1 SMS segment · UCS-2")
        await message.fill("x" * 161)
        await expect(page.locator("#segments")).to_have_text("2 SMS segments · GSM-7")
        await message.fill("See you Monday at 9.")
        await message.press("Enter")
        sms = page.locator("#thread li[data-channel=sms]")
        await expect(sms.locator(".body")).to_have_text(["See you Monday at 9."])
        await expect(sms.locator(".mark")).to_have_text(["SMS"])
        await expect(sms).to_have_attribute("data-status", "delivered")
        await expect(sms.locator(".status")).to_have_text("Delivered")
        await expect(page.locator("#segments")).to_be_hidden()  # nothing typed now
        await expect(switch).not_to_be_checked()
        assert "See you Monday at 9." in await simulated_sms(node, clinic)
        assert await count_messages(node.services, clinic.conversation_id) == 2

        # Shift+Enter is a new line, not a send.
        await message.press_sequentially("Line one")
        await message.press("Shift+Enter")
        await message.press_sequentially("line two")
        await expect(message).to_have_value("Line one\nline two")
        assert await count_messages(node.services, clinic.conversation_id) == 2


async def test_portal_off_live(node: Node, clinic: Clinic, browser: Any) -> None:
    """An admin turns the portal off: the open console loses the switch within a second
    (an `account` frame, no reload) and says why; on again, the switch is back."""
    async with console(browser, node, clinic.staff_email) as page, \
            node.login(clinic.admin_email) as admin:
        await open_thread(page, clinic.conversation_id)
        switch = page.get_by_role("switch", name="Secure Chat")
        await expect(switch).to_be_visible()
        await expect(page.locator("#portal-off")).to_be_hidden()
        response = await admin.put("/api/account/settings", json={"portal_active": False})
        assert response.status_code == 200, response.text
        await expect(switch).to_have_count(0, timeout=1_000)
        await expect(page.locator("#portal-off")).to_have_text(
            "Secure Chat needs the patient portal. Ask an administrator to turn it on.")
        await expect(page.locator("#sms-warning")).to_be_visible()

        response = await admin.put("/api/account/settings", json={"portal_active": True})
        assert response.status_code == 200
        await expect(switch).to_be_visible(timeout=1_000)
        await expect(page.locator("#portal-off")).to_be_hidden()


async def test_refusals_are_shown_next_to_the_message(node: Node, clinic: Clinic,
                                                      browser: Any) -> None:
    """The server knows better than the page: the patient replied STOP, the portal went
    off (here: changed in the store, so no frame tells the page). Each refused send says
    why, beside it, and nothing is stored."""
    async with console(browser, node, clinic.staff_email) as page:
        await open_thread(page, clinic.conversation_id)
        await opt_out(node, clinic.conversation_id)
        await page.get_by_label("Message").fill("Your appointment moved to Friday.")
        await page.get_by_label("Message").press("Enter")
        refused = page.locator("#thread li.failed")
        await expect(refused.locator(".status")).to_have_text(
            ["Not sent: this patient replied STOP and gets no SMS."])

        await set_portal(node, clinic, active=False)
        await page.get_by_role("switch", name="Secure Chat").check()
        await page.get_by_label("Message").fill("Your lab work is ready.")
        await page.get_by_label("Message").press("Enter")
        await expect(refused.locator(".status")).to_have_text(
            ["Not sent: this patient replied STOP and gets no SMS.",
             "Not sent: Secure Chat is turned off for this clinic."])
        await expect(refused.nth(1)).to_have_attribute("data-channel", "secure")
        assert await count_messages(node.services, clinic.conversation_id) == 0


async def set_portal(node: Node, clinic: Clinic, *, active: bool) -> None:
    from sqlalchemy import update

    from server.store.tables import accounts

    async with node.services.db.write() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == clinic.account_id)
                           .values(portal_active=active))


async def test_opted_out_and_unknown_patients(node: Node, clinic: Clinic,
                                              browser: Any) -> None:
    stopped = await add_patient(node, clinic, "Sam Stopped", "+14155550102")
    await opt_out(node, stopped)
    stranger = await unknown_patient(node, clinic, "+14155550103")
    async with console(browser, node, clinic.staff_email) as page:
        stopped_row = page.locator(f'#inbox li[data-conversation-id="{stopped}"]')
        stranger_row = page.locator(f'#inbox li[data-conversation-id="{stranger}"]')
        await expect(stopped_row.locator(".tag")).to_have_text(["Opted out"])
        await expect(stranger_row.locator(".tag")).to_have_text(["Unknown number"])

        # Replied STOP: no SMS; Secure Chat is the only way, so the switch is held on.
        await open_thread(page, stopped)
        await expect(page.locator("#opted-out")).to_contain_text("Replied STOP")
        switch = page.get_by_role("switch", name="Secure Chat")
        await expect(switch).to_be_checked()
        await expect(switch).to_be_disabled()
        await expect(page.locator("#sms-warning")).to_be_hidden()
        await page.get_by_label("Message").fill("Please call us about your refill.")
        await page.get_by_label("Message").press("Enter")
        sent = page.locator("#thread li[data-seq]")
        await expect(sent).to_have_attribute("data-channel", "secure")
        await expect(switch).to_be_checked()

        # An unknown number: nobody to verify on the secure page, so SMS only.
        await open_thread(page, stranger)
        await expect(page.locator(".thread-sub .tag")).to_have_text(["Unknown number"])
        await expect(page.get_by_role("switch", name="Secure Chat")).to_have_count(0)
        await expect(page.locator("#unknown-number")).to_be_visible()
        await expect(page.locator("#sms-warning")).to_be_visible()
