"""Screenshots of the staff console at 1280 x 800: the inbox, a thread holding both SMS and
Secure Chat messages with their statuses, and the composer with Secure Chat on.

They are written to ``$SCREENSHOTS_DIR`` when it is set (``SCREENSHOTS_DIR=docs/screenshots``
refreshes the ones the README shows), else to the test's temporary folder: the suite never
writes into the checkout by itself. The clinic is made up for the pictures, and the walk
through the pages is checked as it goes."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import CreatePatientRequest, Sender, SendRequest, SettingsUpdate
from server.runtime import Services
from tests.conftest import PASSWORD, Clinic
from tests.patient.support import run_node
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.support import (
    DESKTOP,
    console,
    open_thread,
    opt_out,
    patient_page,
    row,
    unknown_patient,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Story:
    """A made-up clinic with a day of traffic, on a clock set to run up to now."""

    def __init__(self, services: Services, clock: FakeClock) -> None:
        self.services = services
        self.clock = clock
        self.tag = secrets.token_hex(3)

    def at(self, moment: datetime) -> None:
        self.clock.advance(seconds=(moment - self.clock.now()).total_seconds())

    async def clinic(self) -> None:
        accounts = self.services.accounts
        self.account_id, _ = await accounts.ensure_account(
            f"Riverside Family Clinic {self.tag}", portal_active=True)
        await accounts.update_settings(
            self.account_id, SettingsUpdate(clinic_name="Riverside Family Clinic"), SYSTEM)
        self.me_email = f"dana.ortiz.{self.tag}@riverside.test"
        self.me_id = await accounts.create_staff(
            self.account_id, email=self.me_email, name="Dana Ortiz, RN", role="admin",
            password=PASSWORD)
        self.doctor_id = await accounts.create_staff(
            self.account_id, email=f"r.patel.{self.tag}@riverside.test", name="Dr. Ravi Patel",
            role="staff", password=PASSWORD)

    async def patient(self, name: str, phone: str, dob: str = "1984-06-12"
                      ) -> tuple[str, str]:
        patient, conversation_id = await self.services.patients.create(
            self.account_id, CreatePatientRequest(name, phone, dob), SYSTEM)
        return patient.id, conversation_id

    async def staff_says(self, conversation_id: str, body: str, *, secure: bool,
                         doctor: bool = False) -> None:
        sender = Sender("staff", self.doctor_id, "Dr. Ravi Patel") if doctor else \
            Sender("staff", self.me_id, "Dana Ortiz, RN")
        await self.services.messaging.send(
            self.account_id, sender, conversation_id,
            SendRequest(secrets.token_hex(8), body, secure), SYSTEM)

    async def sms_from(self, patient_id: str, conversation_id: str, body: str) -> None:
        await self.services.messaging.receive_sms(
            self.account_id, conversation_id, Sender("patient", patient_id, ""),
            f"SM{secrets.token_hex(16)}", body)

    async def secure_from(self, patient_id: str, conversation_id: str, body: str) -> None:
        await self.services.messaging.send(
            self.account_id, Sender("patient", patient_id, ""), conversation_id,
            SendRequest(secrets.token_hex(8), body, True), SYSTEM)


async def test_console_screenshots(database_url: str, master_key: bytes, browser: Any,
                                   tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    today = now.replace(hour=0, minute=0)
    clock = FakeClock(today - timedelta(days=5, hours=-10))
    async with run_node(database_url, master_key, clock) as node:
        story = Story(node.services, clock)
        await story.clinic()
        tom, tom_c = await story.patient("Tom Becker", "+14155550131")
        await story.staff_says(tom_c, "Reminder: your annual physical is due. Reply to "
                               "book.", secure=False)
        await story.sms_from(tom, tom_c, "STOP")
        await opt_out(node, tom_c)

        story.at(today - timedelta(days=1, hours=-11))
        aisha, aisha_c = await story.patient("Aisha Rahman", "+14155550132")
        await story.sms_from(aisha, aisha_c, "Hi, is my refill for lisinopril ready?")
        await story.staff_says(aisha_c, "Your prescription renewal was approved and sent to "
                               "your pharmacy.", secure=True)
        story.at(today - timedelta(days=1, hours=-15, minutes=-20))
        linda, linda_c = await story.patient("Linda Park", "+14155550133")
        await story.staff_says(linda_c, "Your MRI report is ready to view.", secure=True)
        await story.secure_from(linda, linda_c, "Thanks. What does 'mild degeneration' "
                                "mean for me?")
        await story.secure_from(linda, linda_c, "Should I keep doing physical therapy?")

        maria, maria_c = await story.patient("Maria Gonzalez", "+14155550123",
                                             "1980-05-17")
        story.at(today - timedelta(days=1, hours=-16, minutes=-40))
        await story.sms_from(maria, maria_c, "Hi, this is Maria. Can I move my appointment "
                             "on Thursday?")
        story.at(today - timedelta(days=1, hours=-16, minutes=-52))
        await story.staff_says(maria_c, "Of course. We have Friday at 10:30 or 2:15. Which "
                               "works for you?", secure=False, doctor=True)
        story.at(now - timedelta(minutes=50))
        await story.sms_from(maria, maria_c, "Friday 10:30 please. Also, are my blood test "
                             "results back yet?")
        story.at(now - timedelta(minutes=42))
        await unknown_patient_with_text(story, node)
        story.at(now - timedelta(minutes=25))
        james, james_c = await story.patient("James Carter", "+14155550134")
        await story.sms_from(james, james_c, "Running 10 minutes late, sorry!")
        story.at(now - timedelta(minutes=4))

        maria_clinic = Clinic(story.account_id, story.me_email, story.me_email, maria,
                              maria_c, story.me_id, story.me_id)
        async with console(browser, node, story.me_email, viewport=DESKTOP) as page, \
                patient_page(browser, node, maria_clinic) as phone:
            await expect(row(page, maria_c).locator(".online")).to_be_visible()
            await expect(row(page, james_c).locator(".unread")).to_have_text("1")
            await expect(row(page, linda_c).locator(".unread")).to_have_text("2")
            await expect(row(page, tom_c).locator(".tag")).to_have_text(["Opted out"])
            await expect(page.locator("#inbox li .tag-unknown")).to_have_count(1)
            await page.mouse.move(0, 790)  # no hover highlight in the picture
            await page.screenshot(path=str(out / "staff-inbox.png"), animations="disabled")

            await open_thread(page, maria_c)
            message = page.get_by_label("Message")
            await message.fill("You're booked for Friday at 10:30 with Dr. Patel.")
            await expect(page.locator("#segments")).to_have_text("1 SMS segment · GSM-7")
            await message.press("Enter")
            await expect(page.locator("#thread li").last).to_have_attribute(
                "data-status", "delivered")
            story.at(now - timedelta(minutes=3))
            await page.get_by_role("switch", name="Secure Chat").check()
            await message.fill("Your blood test results are back and everything is in "
                               "the normal range. Dr. Patel will go over the details with "
                               "you on Friday.")
            await message.press("Enter")
            secure = page.locator("#thread li[data-channel=secure]").last
            await expect(secure).to_have_attribute("data-status", "read")
            story.at(now - timedelta(minutes=1))
            await phone.get_by_label("Your reply").fill("Thank you! That's a relief. "
                                                         "See you Friday.")
            await phone.get_by_label("Your reply").press("Enter")
            await expect(page.locator("#thread li").last).to_have_attribute(
                "data-direction", "inbound")
            await phone.get_by_label("Your reply").press_sequentially("One more")
            await expect(page.locator("#typing")).to_have_text("Maria Gonzalez is typing…")
            await message.blur()  # the picture shows the thread, not a focus ring
            await page.mouse.move(0, 790)
            await page.screenshot(path=str(out / "staff-thread.png"), animations="disabled")

            await phone.get_by_label("Your reply").fill("")
            await page.get_by_role("switch", name="Secure Chat").check()
            await message.fill("Here is your after-visit summary: keep taking "
                               "atorvastatin 20 mg daily and recheck lipids in 3 months.")
            await expect(page.locator("#secure-hint")).to_be_visible()
            await expect(page.locator("#sms-warning")).to_be_hidden()
            await page.screenshot(path=str(out / "staff-composer-secure.png"),
                                  animations="disabled")
    for name in ("staff-inbox.png", "staff-thread.png", "staff-composer-secure.png"):
        assert (out / name).stat().st_size > 10_000


async def unknown_patient_with_text(story: Story, node: Any) -> None:
    class _Clinic:
        account_id = story.account_id

    conversation_id = await unknown_patient(node, _Clinic(), "+14155550188")
    from sqlalchemy import select

    from server.store.tables import conversations

    async with node.services.db.read() as conn:
        patient_id = (await conn.execute(select(conversations.c.patient_id).where(
            conversations.c.id == conversation_id))).scalar_one()
    await story.sms_from(patient_id, conversation_id, "Is this the clinic? I got a missed "
                         "call from this number.")
