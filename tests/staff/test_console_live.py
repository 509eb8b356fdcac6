"""Issue 6, acceptance 1, in real headless Chromium: two staff consoles (two browser
contexts, two staff members of one account) and the patient's secure page. A message
from either console reaches the other console and the patient's page without a reload;
the inbox order and unread counts follow live; the patient's typing shows."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from server.clock import FakeClock
from tests.conftest import Clinic
from tests.patient.support import Node
from tests.staff.support import (
    add_patient,
    console,
    inbox_order,
    open_thread,
    patient_page,
    publish_send,
    row,
    thread_seqs,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def send_from(page: Any, body: str, *, secure: bool) -> None:
    if secure:
        await page.get_by_role("switch", name="Secure Chat").check()
    await page.get_by_label("Message").fill(body)
    await page.get_by_role("button", name="Send", exact=True).click()


async def test_two_consoles_and_the_patient_live(node: Node, clinic: Clinic, browser: Any,
                                                 clock: FakeClock) -> None:
    clock.advance(minutes=1)
    other = await add_patient(node, clinic, "Robin Second", "+14155550101")
    pat = clinic.conversation_id
    async with console(browser, node, clinic.admin_email) as first, \
            console(browser, node, clinic.staff_email) as second, \
            patient_page(browser, node, clinic) as phone:
        for page in (first, second):  # a reload would lose this
            await page.evaluate("window.notReloaded = true")
            assert await inbox_order(page) == [other, pat]
            await open_thread(page, pat)

        # Console 1 → console 2 and the patient; console 2 → console 1 and the patient.
        await send_from(first, "Your results are in: all normal.", secure=True)
        await send_from(second, "Dr. Rivera will call you at 3 pm.", secure=True)
        expected = ["Your results are in: all normal.", "Dr. Rivera will call you at 3 pm."]
        for page in (first, second):
            await expect(page.locator("#thread li .body")).to_have_text(expected)
            await expect(page.locator("#thread li[data-channel=secure]")).to_have_count(2)
            # The sender's own item shows its text at once and gets its seq with the ack.
            await expect(page.locator("#thread li[data-seq]")).to_have_count(2)
            assert await thread_seqs(page) == [1, 2]
        await expect(phone.locator("#thread li.theirs .body")).to_have_text(expected)
        # Each console names who wrote what.
        await expect(first.locator("#thread li .who")).to_have_text(
            ["You", f"Nurse {clinic.staff_email[6:14]}"])

        # The patient types: both open threads say so.
        await phone.get_by_label("Your reply").press_sequentially("Th")
        for page in (first, second):
            await expect(page.locator("#typing")).to_have_text("Pat Example is typing…")

        # Both go back to the inbox; the patient's reply makes an unread badge in each,
        # and puts Pat on top.
        for page in (first, second):
            await page.get_by_role("navigation", name="Main").get_by_role(
                "link", name="Inbox").click()
            await expect(page.locator("#thread-title")).to_be_hidden()
            await expect(row(page, pat).locator(".unread")).to_be_hidden()
        clock.advance(minutes=1)
        await phone.get_by_label("Your reply").fill("Thank you!")
        await phone.get_by_label("Your reply").press("Enter")
        for page in (first, second):
            await expect(row(page, pat).locator(".unread")).to_have_text("1")
            await expect(row(page, pat).locator(".online")).to_be_visible()
            assert await inbox_order(page) == [pat, other]

        # Activity in the second conversation moves it up, live.
        clock.advance(minutes=1)
        await publish_send(node, clinic, other, "Reminder: flu shots this week.", secure=False)
        for page in (first, second):
            await expect(page.locator("#inbox li").first).to_have_attribute(
                "data-conversation-id", other)
            assert await inbox_order(page) == [other, pat]
            await expect(row(page, other).locator(".unread")).to_be_hidden()

        # A second reply: Pat is back on top with two unread; reading clears only the
        # reader's own count.
        clock.advance(minutes=1)
        await phone.get_by_label("Your reply").fill("See you then.")
        await phone.get_by_label("Your reply").press("Enter")
        for page in (first, second):
            await expect(row(page, pat).locator(".unread")).to_have_text("2")
            await expect(page.locator("#inbox li").first).to_have_attribute(
                "data-conversation-id", pat)
        await open_thread(first, pat)
        await expect(first.locator("#thread li .body")).to_have_text(
            [*expected, "Thank you!", "See you then."])
        await expect(row(first, pat).locator(".unread")).to_be_hidden()
        await expect(row(second, pat).locator(".unread")).to_have_text("2")
        # The patient sees that their replies were read.
        await expect(phone.locator("#thread li.mine .status")).to_have_text(["Read", "Read"])

        for page in (first, second):
            assert await page.evaluate("window.notReloaded") is True
