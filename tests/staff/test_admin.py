"""The console's admin pages in real headless Chromium: settings saved and read back (with
server errors next to their field), a staff member added who can then sign in, the audit
log filtered and exported as CSV (no formula injection), keyboard use at 768 px, and the
settings screenshot. UI only, so on one backend."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server import audit
from server.clock import FakeClock
from server.services.audit_records import AUDIT_COLUMNS
from tests.conftest import PASSWORD, Clinic
from tests.patient.support import PHONE_VIEWPORT, Node, run_node
from tests.patient.test_accessibility import CONTRAST, assert_focus_ring
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.test_admin_support import (
    DESKTOP,
    TABLET,
    console,
    main_nav,
    open_admin,
    open_settings,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

NEW_PASSWORD = "violet tugboat mirror canyon"  # 28 characters: passes the policy
FORMULA = '=HYPERLINK("https://evil.example","x")'


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


@pytest.fixture
async def node(database_url: str, master_key: bytes, clock: FakeClock):
    async with run_node(database_url, master_key, clock) as running:
        yield running


async def test_settings_round_trip(node: Node, clinic: Clinic, browser: Any) -> None:
    """Save sends only what changed, says "Settings saved", and a reload shows the saved
    values; a server refusal is shown next to the field it names. The SMS number is
    shown read-only, saying who assigns it, and is never sent."""
    async with console(browser, node, clinic.admin_email) as page:
        await open_settings(page)
        portal = page.get_by_role("switch", name="Patient portal")
        await expect(portal).to_be_checked()
        await expect(page.get_by_role("switch", name="Require a one-time code")
                     ).not_to_be_checked()
        await expect(page.get_by_label("Link lifetime (hours)")).to_have_value("72")

        sms = page.get_by_label("SMS number")
        await expect(sms).to_have_attribute("readonly", "")
        await expect(sms).to_have_value(re.compile("None: texts go from the shared number"))
        await expect(sms).to_have_accessible_description(re.compile("set-sms-number"))

        await page.get_by_label("Clinic name").fill("Riverside Family Practice")
        await page.get_by_label("Link lifetime (hours)").fill("48")
        await page.get_by_role("switch", name="Require a one-time code").check()
        async with page.expect_request(lambda r: r.method == "PUT") as sent:
            await page.get_by_role("button", name="Save settings").click()
        assert (await sent.value).post_data_json == {
            "clinic_name": "Riverside Family Practice",
            "secure_link_ttl_hours": 48, "require_code": True}
        await expect(page.get_by_role("status").filter(has_text="Settings saved")
                     ).to_be_visible()

        # The operator assigns a number: a reload shows it, still read-only.
        await node.services.accounts.assign_sms_number(clinic.account_id, "(415) 555-0142")
        await page.reload()
        await open_settings(page)
        await expect(page.get_by_label("Clinic name")).to_have_value("Riverside Family Practice")
        await expect(sms).to_have_value("+14155550142")
        await expect(sms).to_have_attribute("readonly", "")
        await expect(page.get_by_label("Link lifetime (hours)")).to_have_value("48")
        await expect(page.get_by_role("switch", name="Require a one-time code")).to_be_checked()

        # Nothing changed: nothing sent.
        await page.get_by_role("button", name="Save settings").click()
        await expect(page.get_by_role("status").filter(has_text="No changes to save")
                     ).to_be_visible()

        # A refusal is shown next to the field it names.
        name = page.get_by_label("Clinic name")
        name_field = page.locator(".admin-field").filter(
            has=page.locator("#settings-clinic-name"))
        # (past the input's maxlength: as a script, or an older page, could send it)
        await name.evaluate("el => { el.removeAttribute('maxlength'); "
                            "el.value = 'x'.repeat(201); }")
        async with page.expect_response(lambda r: r.request.method == "PUT") as answer:
            await page.get_by_role("button", name="Save settings").click()
        assert (await answer.value).status == 422
        alert = name_field.get_by_role("alert")
        await expect(alert).to_be_visible()
        await expect(name).to_have_attribute("aria-invalid", "true")
        await expect(name).to_be_focused()
        described = await name.get_attribute("aria-describedby")
        assert await alert.get_attribute("id") in described.split()
        # Out of range is caught before sending.
        await name.fill("Riverside Family Practice")
        await page.get_by_label("Link lifetime (hours)").fill("721")
        await page.get_by_role("button", name="Save settings").click()
        await expect(page.get_by_role("alert")).to_have_text(re.compile("1 to 720"))
        await expect(name).not_to_have_attribute("aria-invalid", "true")
    settings = await node.services.accounts.settings(clinic.account_id)
    assert settings.sms_number == "+14155550142" and settings.secure_link_ttl_hours == 48


async def test_portal_off_is_confirmed(node: Node, clinic: Clinic, browser: Any) -> None:
    """Turning the portal off asks first, explaining the Secure Chat toggle goes away;
    Cancel sends nothing."""
    async with console(browser, node, clinic.admin_email) as page:
        await open_settings(page)
        await page.get_by_role("switch", name="Patient portal").uncheck()
        await page.get_by_role("button", name="Save settings").click()
        dialog = page.get_by_role("dialog", name="Turn off the patient portal?")
        await expect(dialog).to_contain_text("Secure Chat toggle")
        await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(dialog).to_have_count(0)
        await expect(page.get_by_role("button", name="Save settings")).to_be_focused()
        assert (await node.services.accounts.settings(clinic.account_id)).portal_active


async def test_add_staff_member_who_signs_in(node: Node, clinic: Clinic, browser: Any
                                             ) -> None:
    """The new member shows in the table and can sign in; a weak password is caught before
    sending and a taken email is shown next to Email; your own row has no Deactivate."""
    async with console(browser, node, clinic.admin_email) as page:
        await open_admin(page, "Staff", "Staff")
        table = page.locator("#staff-table")
        admin_row = table.locator(f'tr[data-staff-id="{clinic.admin_id}"]')
        await expect(admin_row).to_contain_text("You")
        await expect(admin_row.get_by_role("button")).to_have_count(0)
        await expect(table.locator(f'tr[data-staff-id="{clinic.staff_id}"]')
                     .get_by_role("button", name=re.compile("^Deactivate "))).to_be_visible()
        await expect(page.get_by_text(re.compile("At least 15 characters"))).to_be_visible()

        form = page.locator("#staff-form")
        await form.get_by_label("Name", exact=True).fill("Dana Reyes")
        await form.get_by_label("Email").fill(clinic.staff_email)
        await form.get_by_label("Role").select_option("admin")
        await form.get_by_label("Temporary password").fill("too short")
        await page.get_by_role("button", name="Add staff member").click()
        await expect(page.get_by_role("alert")).to_have_text("Use at least 15 characters.")
        await expect(form.get_by_label("Temporary password")).to_be_focused()

        await form.get_by_label("Temporary password").fill(NEW_PASSWORD)
        await page.get_by_role("button", name="Add staff member").click()
        email_field = page.locator(".admin-field").filter(has=page.locator("#staff-email"))
        await expect(email_field.get_by_role("alert")).to_contain_text("email exists")

        await form.get_by_label("Email").fill("dana.reyes@clinic.test")
        await page.get_by_role("button", name="Add staff member").click()
        await expect(page.get_by_role("status").filter(has_text="Dana Reyes was added")
                     ).to_be_visible()
        row = table.locator("tr", has_text="Dana Reyes")
        await expect(row).to_contain_text("dana.reyes@clinic.test")
        await expect(row).to_contain_text("Administrator")
        await expect(row).to_contain_text("Active")
        await expect(form.get_by_label("Name", exact=True)).to_have_value("")

    context = await browser.new_context(viewport=DESKTOP)
    try:
        fresh = await context.new_page()
        await fresh.goto(f"{node.url}/")
        await sign_in(fresh, "dana.reyes@clinic.test", NEW_PASSWORD)
        await expect(main_nav(fresh).get_by_role("link", name="Staff")).to_be_visible()
    finally:
        await context.close()


async def test_audit_filter_and_csv_export(node: Node, clinic: Clinic, browser: Any
                                          ) -> None:
    """Filters narrow the table (dates as RFC 3339 UTC), Load more pages by position,
    and Export CSV downloads the same filter with cells made safe for spreadsheets."""
    async with node.services.db.write() as conn:
        await audit.append(conn, node.services.clock, stream=clinic.account_id,
                           actor=audit.SYSTEM, action="test.formula", object_type="note",
                           object_id=FORMULA)
    async with console(browser, node, clinic.admin_email) as page:
        await open_admin(page, "Audit log", "Audit log")
        table = page.locator("#audit-table tbody")
        await expect(table.locator("tr").first).to_contain_text("audit.read")

        await page.get_by_label("Action", exact=True).fill("auth.login")
        await page.get_by_label("Staff member").select_option(clinic.admin_id)
        await page.get_by_label("From", exact=True).fill("2026-01-01")
        await page.get_by_label("To", exact=True).fill("2026-01-01")
        async with page.expect_request(re.compile(r"/api/audit\?")) as asked:
            await page.get_by_role("button", name="Apply").click()
        query = (await asked.value).url.split("?", 1)[1]
        assert "since=2026-01-01T00%3A00%3A00.000Z" in query
        assert "until=2026-01-02T00%3A00%3A00.000Z" in query
        await expect(table.locator("tr")).to_have_count(1)
        await expect(table.locator("tr")).to_contain_text("auth.login")
        await expect(table.locator("tr")).to_contain_text(clinic.admin_id[:8])

        # A day with nothing in it.
        await page.get_by_label("From", exact=True).fill("2026-02-01")
        await page.get_by_label("To", exact=True).fill("2026-02-01")
        await page.get_by_role("button", name="Apply").click()
        await expect(table).to_contain_text("No entries match these filters.")
        # To before From is caught next to To.
        await page.get_by_label("From", exact=True).fill("2026-01-03")
        await page.get_by_label("To", exact=True).fill("2026-01-02")
        await page.get_by_role("button", name="Apply").click()
        to_field = page.locator(".admin-field").filter(has=page.locator("#audit-to"))
        await expect(to_field.get_by_role("alert")).to_contain_text("before the start")

        await page.get_by_label("From", exact=True).fill("")
        await page.get_by_label("To", exact=True).fill("")
        await page.get_by_label("Staff member").select_option("")
        await page.get_by_label("Action", exact=True).fill("test.formula")
        await page.get_by_role("button", name="Apply").click()
        await expect(table.locator("tr")).to_have_count(1)
        async with page.expect_download() as downloaded:
            await page.get_by_role("link", name="Export CSV").click()
        download = await downloaded.value
        assert "format=csv" in download.url and "action=test.formula" in download.url
        rows = read_csv(await download.path())
    assert tuple(rows[0]) == AUDIT_COLUMNS
    assert len(rows) == 2
    assert rows[1][AUDIT_COLUMNS.index("object_id")] == "'" + FORMULA
    assert not any(cell[:1] in ("=", "+", "-", "@") for row in rows for cell in row)


async def test_audit_load_more(node: Node, clinic: Clinic, browser: Any) -> None:
    """More than a page of entries: Load more appends the next page by before_seq."""
    async with node.services.db.write() as conn:
        for n in range(105):
            await audit.append(conn, node.services.clock, stream=clinic.account_id,
                               actor=audit.SYSTEM, action="test.bulk", object_type="note",
                               object_id=f"note-{n}")
    async with console(browser, node, clinic.admin_email) as page:
        await open_admin(page, "Audit log", "Audit log")
        rows = page.locator("#audit-table tbody tr")
        await expect(rows).to_have_count(100)
        more = page.get_by_role("button", name="Load more")
        async with page.expect_request(re.compile(r"before_seq=")) as asked:
            await more.click()
        assert "before_seq=" in (await asked.value).url
        await expect(more).to_be_hidden()
        count = await rows.count()
        assert count > 105
        seqs = [int(s) for s in await rows.evaluate_all(
            "(rows) => rows.map((r) => r.dataset.seq)")]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == count


async def test_keyboard_and_contrast_at_768(node: Node, clinic: Clinic, browser: Any
                                           ) -> None:
    """At 768 px: no sideways scrolling of the page, every admin page passes the contrast
    check, the settings form works by keyboard alone with a visible focus ring, and the
    deactivate dialog keeps focus inside it."""
    async with console(browser, node, clinic.admin_email, viewport=TABLET) as page:
        await open_settings(page)
        for name, heading in (("Staff", "Staff"), ("Audit log", "Audit log"),
                              ("Settings", "Account settings")):
            await open_admin(page, name, heading)
            await expect(page.get_by_role("heading", level=1)).to_be_focused()
            assert await page.evaluate(CONTRAST) == [], name
            assert await page.evaluate(
                "() => document.documentElement.scrollWidth <= innerWidth"), name

        # The loop ended on the settings page, its heading focused.
        clinic_name = page.get_by_label("Clinic name")
        portal = page.get_by_role("switch", name="Patient portal")
        await page.keyboard.press("Tab")
        await assert_focus_ring(page, portal)
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("switch", name="Require a one-time code")).to_be_focused()
        await page.keyboard.press("Space")
        await expect(page.get_by_role("switch", name="Require a one-time code")).to_be_checked()
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        await assert_focus_ring(page, clinic_name)
        await page.keyboard.press("End")  # Tab selected the whole value
        await page.keyboard.type(" East")
        await page.keyboard.press("Enter")  # submits the form
        await expect(page.get_by_role("status").filter(has_text="Settings saved")
                     ).to_be_visible()
        saved = await node.services.accounts.settings(clinic.account_id)
        assert saved.clinic_name.endswith(" East") and saved.require_code

        await open_admin(page, "Staff", "Staff")
        deactivate = page.get_by_role("button", name=re.compile("^Deactivate Nurse"))
        await page.keyboard.press("Tab")  # the table's scrolling region
        await assert_focus_ring(page, page.get_by_role("region", name="Staff members table"))
        await page.keyboard.press("Tab")
        await assert_focus_ring(page, deactivate)
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        assert await page.evaluate(CONTRAST) == []
        await page.keyboard.press("Shift+Tab")
        await expect(dialog.get_by_role("button", name="Deactivate", exact=True)
                     ).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(dialog).to_have_count(0)
        await expect(deactivate).to_be_focused()


async def test_settings_screenshot(node: Node, clinic: Clinic, browser: Any,
                                   tmp_path: Path) -> None:
    """The settings page at 1280x800, for the README (written to $SCREENSHOTS_DIR when
    set, else to the test's temporary folder)."""
    out = screenshots_dir(tmp_path)
    email = f"alex.rivera-{clinic.account_id[:8]}@clinic.test"
    await node.services.accounts.create_staff(clinic.account_id, email=email,
                                              name="Dr. Alex Rivera", role="admin",
                                              password=PASSWORD)
    async with node.login(email) as client:
        response = await client.put("/api/account/settings", json={
            "clinic_name": "Riverside Family Practice"})
        assert response.status_code == 200, response.text
    await node.services.accounts.assign_sms_number(clinic.account_id, "+14155550123")
    async with console(browser, node, email) as page:
        await open_settings(page)
        await expect(page.get_by_label("Clinic name")).to_have_value("Riverside Family Practice")
        await page.get_by_label("Link lifetime (hours)").fill("48")
        await page.get_by_role("button", name="Save settings").click()
        await expect(page.get_by_role("status").filter(has_text="Settings saved")
                     ).to_be_visible()
        await page.mouse.move(1, 790)  # no hover highlight in the picture
        await page.get_by_role("heading", level=1).focus()
        await page.screenshot(path=str(out / "staff-admin-settings.png"))

        await page.set_viewport_size(PHONE_VIEWPORT)
        sms = page.get_by_label("SMS number")
        await expect(sms).to_have_value("+14155550123")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await sms.scroll_into_view_if_needed()
        await page.get_by_text("Clinic name", exact=True).scroll_into_view_if_needed()
        await page.screenshot(path=str(out / "staff-admin-settings-390.png"))
