"""Accessibility of the patient's pages in Chromium at phone size: names and landmarks,
focus order, a visible focus ring, AA contrast of every piece of text, live regions,
touch-sized controls and zoom allowed. UI only, so on one backend."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import Clinic
from tests.patient.support import DOB, WRONG_DOB, Node, new_link, require_code

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Every element with text of its own: its colour against the first opaque background
# behind it; AA asks 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold). Placeholders
# count too. Returns the failures as strings.
CONTRAST = """() => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number);
                         return { rgb: m.slice(0, 3), a: m.length > 3 ? m[3] : 1 }; };
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
                            return (x + 0.05) / (y + 0.05); };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0.99) return c.rgb;
    }
    return [255, 255, 255];
  };
  const failures = [];
  const check = (el, color, what) => {
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const got = ratio(parse(color).rgb, background(el));
    if (got < need) failures.push(`${what}: ${got.toFixed(2)} < ${need}`);
  };
  for (const el of document.querySelectorAll("body *")) {
    if (!el.getClientRects().length) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (own) check(el, getComputedStyle(el).color, `${el.tagName}.${el.className} "${
      el.textContent.trim().slice(0, 30)}"`);
    if (el.placeholder) check(el, getComputedStyle(el, "::placeholder").color,
                              `placeholder of #${el.id}`);
  }
  return failures;
}"""

# What Tab visits, in order (no positive tabindex may reorder it): ids or button texts.
TAB_ORDER = """() => {
  if (document.querySelector('[tabindex]:not([tabindex="-1"]):not([tabindex="0"])')) {
    return ["a positive tabindex"];
  }
  return [...document.querySelectorAll("a[href], button, input, textarea, select")]
    .filter((el) => !el.disabled && el.getClientRects().length)
    .map((el) => el.tagName === "BUTTON" ? el.textContent.trim() : el.id);
}"""

FOCUS_RING = """(el) => {
  const style = getComputedStyle(el);
  return { style: style.outlineStyle, width: parseFloat(style.outlineWidth),
           color: style.outlineColor };
}"""


def contrast(color: str, against: tuple[int, int, int] = (255, 255, 255)) -> float:
    rgb = [int(part) for part in color[color.index("(") + 1:color.index(")")].split(",")[:3]]

    def lum(values) -> float:
        out = []
        for v in values:
            v /= 255
            out.append(v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4)
        return 0.2126 * out[0] + 0.7152 * out[1] + 0.0722 * out[2]

    high, low = sorted([lum(rgb), lum(against)], reverse=True)
    return (high + 0.05) / (low + 0.05)


async def assert_page_basics(page: Any) -> None:
    assert await page.get_attribute("html", "lang") == "en"
    viewport = await page.get_attribute('meta[name="viewport"]', "content")
    assert "user-scalable=no" not in viewport and "maximum-scale" not in viewport
    assert await page.title()
    assert await page.get_by_role("main").count() == 1
    assert await page.get_by_role("heading", level=1).count() == 1
    assert await page.evaluate(CONTRAST) == []
    for button in await page.get_by_role("button").all():
        box = await button.bounding_box()
        assert box is not None and box["height"] >= 44, await button.text_content()


async def assert_focus_ring(page: Any, locator: Any) -> None:
    await expect(locator).to_be_focused()
    ring = await locator.evaluate(FOCUS_RING)
    assert ring["style"] == "solid" and ring["width"] >= 2, ring
    assert contrast(ring["color"]) >= 3, ring


async def test_verification_pages(node: Node, clinic: Clinic, phone: Any) -> None:
    token = await new_link(node, clinic)
    await phone.goto(f"{node.url}/s/{token}")
    await assert_page_basics(phone)
    date = phone.get_by_label("Date of birth")
    await expect(date).to_be_focused()
    await expect(date).to_have_attribute("autocomplete", "bday")
    await assert_focus_ring(phone, date)
    assert await phone.evaluate(TAB_ORDER) == ["date_of_birth", "Continue"]
    await phone.get_by_role("heading", level=1).click()  # focus starts from there
    await phone.keyboard.press("Tab")
    await expect(date).to_be_focused()

    await date.fill(WRONG_DOB)
    await date.press("Enter")  # submits the form, as a keyboard user would
    alert = phone.get_by_role("alert")
    await expect(alert).to_contain_text("does not match our records")
    await expect(date).to_be_focused()
    await expect(date).to_have_attribute("aria-invalid", "true")
    await expect(date).to_have_accessible_description(await alert.text_content())
    await assert_page_basics(phone)

    await phone.goto(f"{node.url}/s/{'C' * 43}")
    await assert_page_basics(phone)
    await phone.goto(f"{node.url}/s/ended")
    await assert_page_basics(phone)


async def test_code_step(node: Node, clinic: Clinic, phone: Any) -> None:
    await require_code(node, clinic)
    await phone.goto(f"{node.url}/s/{await new_link(node, clinic)}")
    await phone.get_by_label("Date of birth").fill(DOB)
    await phone.get_by_role("button", name="Continue").click()
    code = phone.get_by_label("Code from the text message")
    await expect(code).to_be_focused()
    await expect(code).to_have_attribute("autocomplete", "one-time-code")
    await expect(code).to_have_accessible_description(
        "We texted you a 6-digit code. It expires in 10 minutes.")
    await expect(phone.get_by_label("Date of birth")).to_have_value(DOB)
    await expect(phone.get_by_role("button", name="Text me a new code")).to_be_visible()
    await assert_page_basics(phone)


async def test_chat_page(node: Node, clinic: Clinic, phone: Any) -> None:
    async with node.login(clinic.staff_email) as api:
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": "a11y-1", "secure": True,
                                        "body": "Your prescription is ready for pickup."})
        assert response.status_code == 201
    await phone.goto(f"{node.url}/s/{await new_link(node, clinic)}")
    await phone.get_by_label("Date of birth").fill(DOB)
    await phone.get_by_role("button", name="Continue").click()
    log = phone.get_by_role("log", name="Messages")
    await expect(log).to_contain_text("Your prescription is ready for pickup.")
    status = phone.get_by_role("status")
    await expect(status).to_have_text("Connected")
    await expect(phone.locator("#typing")).to_have_attribute("aria-live", "polite")

    reply = phone.get_by_label("Your reply")
    await reply.fill("Thanks, I'll come by today.")
    await reply.press("Enter")
    await expect(phone.locator("#thread li.mine .status")).to_have_text(["Sent"])
    await assert_page_basics(phone)

    # Keyboard order: End session, the reply box, Send; each with a visible ring.
    assert await phone.evaluate(TAB_ORDER) == ["End session", "body", "Send"]
    await phone.get_by_role("heading", level=1).click()
    for name in ("End session", None, "Send"):
        await phone.keyboard.press("Tab")
        target = phone.get_by_role("button", name=name) if name else reply
        await assert_focus_ring(phone, target)
