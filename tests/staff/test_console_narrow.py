"""The staff console on a 390 px phone in real headless Chromium: the top bar stays one
row, and neither the inbox nor the staff table makes the page wider than the screen.
Screenshots ``staff-inbox-390.png`` and ``staff-admin-staff-390.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from server.audit import SYSTEM
from server.protocol import CreatePatientRequest
from tests.conftest import PASSWORD, Clinic
from tests.patient.support import PHONE_VIEWPORT, Node
from tests.patient.test_screenshots import screenshots_dir
from tests.staff.test_admin_support import console, main_nav, open_admin

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The page's width, the top bar's height and its parts (each link whole: not cut off by
# the strip the links scroll in).
LAYOUT = """() => {
  const bar = document.getElementById("topbar").getBoundingClientRect();
  const strip = document.querySelector("#topbar .nav ul").getBoundingClientRect();
  const parts = [...document.querySelectorAll(
    "#topbar .logo, #topbar .nav a, #topbar .connection, #topbar button")]
    .filter((el) => el.getClientRects().length)
    .map((el) => { const r = el.getBoundingClientRect();
                   return { text: el.textContent, top: r.top, bottom: r.bottom,
                            right: r.right }; });
  const cut = [...document.querySelectorAll("#topbar .nav a")]
    .filter((a) => a.getBoundingClientRect().right > strip.right + 0.5)
    .map((a) => a.textContent);
  return { width: document.documentElement.scrollWidth, bar: bar.height, parts, cut };
}"""


def assert_fits(layout: dict) -> None:
    assert layout["width"] <= PHONE_VIEWPORT["width"], layout
    assert layout["bar"] <= 64, layout  # one row: 44 px targets and the bar's padding
    assert layout["cut"] == [], layout
    middle = layout["bar"] / 2
    for part in layout["parts"]:
        assert part["top"] < middle < part["bottom"], part  # all on the one row
        assert part["right"] <= PHONE_VIEWPORT["width"], part


async def test_console_fits_a_phone(node: Node, clinic: Clinic, browser: Any,
                                    tmp_path: Path) -> None:
    out = screenshots_dir(tmp_path)
    services = node.services
    for name, phone in (("Maria Fernanda Gonzalez-Oyelaran", "+14155550161"),
                        ("Sam Chen", "+14155550162")):
        await services.patients.create(clinic.account_id,
                                       CreatePatientRequest(name, phone, "1975-03-02"),
                                       SYSTEM)
    await services.accounts.create_staff(
        clinic.account_id, email=f"bartholomew.nakamura-whitfield.{clinic.account_id[:8]}"
        "@riverside-family-practice.test", name="Dr. Bartholomew Nakamura-Whitfield",
        role="staff", password=PASSWORD)
    async with console(browser, node, clinic.admin_email, viewport=PHONE_VIEWPORT) as page:
        await expect(page.locator("#inbox li")).to_have_count(3)
        await expect(page.locator("#topbar .connection")).to_have_attribute(
            "data-state", "online")
        for link in ("Inbox", "Settings", "Staff", "Audit log"):
            await expect(main_nav(page).get_by_role("link", name=link)).to_be_visible()
        await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        await page.screenshot(path=str(out / "staff-inbox-390.png"))
        assert_fits(await page.evaluate(LAYOUT))

        await open_admin(page, "Staff", "Staff")
        await expect(page.locator("#staff-table tbody tr")).to_have_count(3)
        await page.get_by_role("heading", level=1).focus()
        await page.screenshot(path=str(out / "staff-admin-staff-390.png"))
        assert_fits(await page.evaluate(LAYOUT))
        table = await page.locator("#staff-table").bounding_box()
        assert table["x"] >= 0 and table["x"] + table["width"] <= PHONE_VIEWPORT["width"]
