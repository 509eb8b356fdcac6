"""The audit log's staff and patient filters in real headless Chromium: both are picked
by name, only ids reach the server (a search is itself audited), a name that is no
patient's is caught in the page, and the table names the patient each entry is about.
Screenshots ``staff-admin-audit.png`` (1280) and ``staff-admin-audit-390.png``."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import expect

from server.audit import SYSTEM, Actor
from server.protocol import CreatePatientRequest, Sender, SendRequest, SettingsUpdate
from tests.conftest import PASSWORD
from tests.patient.support import PHONE_VIEWPORT, Node
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.test_admin_support import console, open_admin

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_audit_filters_by_staff_and_patient_name(node: Node, browser: Any,
                                                       tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    services, tag = node.services, secrets.token_hex(3)
    account_id, _ = await services.accounts.ensure_account(f"Riverside {tag}",
                                                           portal_active=True)
    await services.accounts.update_settings(
        account_id, SettingsUpdate(clinic_name="Riverside Family Practice"), SYSTEM)
    admin_email = f"dana.ortiz.{tag}@riverside.test"
    await services.accounts.create_staff(account_id, email=admin_email,
                                         name="Dana Ortiz, RN", role="admin",
                                         password=PASSWORD)
    doctor_id = await services.accounts.create_staff(
        account_id, email=f"r.patel.{tag}@riverside.test", name="Dr. Ravi Patel",
        role="staff", password=PASSWORD)
    ids = {}
    for name, phone in (("Maria Gonzalez", "+14155550161"), ("Sam Chen", "+14155550178"),
                        ("Alex Rivera", "+14155550134"), ("Alex Rivera", "+14155550135")):
        patient, conversation_id = await services.patients.create(
            account_id, CreatePatientRequest(name, phone, "1984-03-12"), SYSTEM)
        ids[(name, phone[-4:])] = (patient.id, conversation_id)
    maria, maria_conversation = ids[("Maria Gonzalez", "0161")]
    sam, sam_conversation = ids[("Sam Chen", "0178")]
    doctor = Actor("staff", doctor_id)
    for conversation_id, body in ((maria_conversation, "Your prescription is ready."),
                                  (sam_conversation, "See you at 3 PM.")):
        await services.messaging.send(account_id, Sender("staff", doctor_id, "Dr. Ravi Patel"),
                                      conversation_id, SendRequest(secrets.token_hex(8), body,
                                                                   True), doctor)
        await services.messaging.history(account_id, conversation_id, before_seq=None,
                                         limit=50, actor=doctor)

    async with console(browser, node, admin_email) as page:
        await open_admin(page, "Audit log", "Audit log")
        table = page.locator("#audit-table tbody")
        await expect(table.locator("tr").first).to_contain_text("audit.read")
        staff = page.get_by_label("Staff member")
        await expect(staff.locator("option")).to_have_text(
            ["Anyone", "Dana Ortiz, RN", "Dr. Ravi Patel"], ignore_case=False)
        # Two patients share a name: each is offered with its masked phone.
        await expect(page.locator("#audit-patients option")).to_have_count(4)
        labels = await page.locator("#audit-patients option").evaluate_all(
            "(options) => options.map((o) => o.value)")
        assert sorted(labels) == ["Alex Rivera (+1 ••• •••• 0134)",
                                  "Alex Rivera (+1 ••• •••• 0135)", "Maria Gonzalez",
                                  "Sam Chen"]

        # A name that is no patient's is caught here and never sent.
        patient = page.get_by_label("Patient", exact=True)
        await patient.fill("Maria Gonzales")
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/audit" in r.url else None)
        await page.get_by_role("button", name="Apply").click()
        field = page.locator(".admin-field").filter(has=page.locator("#audit-patient"))
        await expect(field.get_by_role("alert")).to_have_text("Pick a patient from the list.")
        await expect(patient).to_be_focused()
        assert asked == []

        await staff.select_option(label="Dr. Ravi Patel")
        await patient.fill("Maria Gonzalez")
        async with page.expect_request(re.compile(r"/api/audit\?")) as request:
            await page.get_by_role("button", name="Apply").click()
        url = (await request.value).url
        assert parse_qs(urlsplit(url).query) == {
            "actor_id": [doctor_id], "patient_id": [maria], "limit": ["100"]}
        assert "Maria" not in url and "Ravi" not in url
        rows = table.locator("tr")
        await expect(rows).to_have_count(2)  # the message sent, the thread read
        await expect(rows.locator("td:nth-child(3) code")).to_have_text(
            ["conversation.history_read", "message.sent"])
        await expect(rows.locator("td:nth-child(2) .admin-strong")).to_have_text(
            ["Dr. Ravi Patel"] * 2)
        await expect(rows.locator("td:nth-child(4) .admin-about")).to_have_text(
            ["Maria Gonzalez"] * 2)
        export = await page.get_by_role("link", name="Export CSV").get_attribute("href")
        assert f"patient_id={maria}" in export and f"actor_id={doctor_id}" in export

        await page.mouse.move(1, 790)
        await page.get_by_role("heading", level=1).focus()
        await page.screenshot(path=str(out / "staff-admin-audit.png"))

        await page.set_viewport_size(PHONE_VIEWPORT)
        await expect(rows).to_have_count(2)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.screenshot(path=str(out / "staff-admin-audit-390.png"))

        # Any patient again: the filter is cleared and Sam's entries come back.
        await page.set_viewport_size({"width": 1280, "height": 800})
        await patient.fill("")
        await page.get_by_role("button", name="Apply").click()
        await expect(rows.filter(has_text="Sam Chen")).not_to_have_count(0)
    assert sam and maria != sam
