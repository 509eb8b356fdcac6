"""The inbox and the thread's history in real headless Chromium: the filter by name,
adding a patient (clear errors for a bad phone, an impossible date and a phone already
taken; success opens the new conversation), and older history loaded on scrolling up
without showing anything twice or moving what is on screen."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import Sender, SendRequest
from tests.conftest import Clinic
from tests.patient.support import Node
from tests.staff.support import (
    add_patient,
    console,
    inbox_order,
    open_thread,
    publish_send,
    row,
    thread_seqs,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_filter_by_name(node: Node, clinic: Clinic, browser: Any) -> None:
    robin = await add_patient(node, clinic, "Robin Second", "+14155550101")
    async with console(browser, node, clinic.staff_email) as page:
        shown = page.locator("#inbox li:visible")
        await expect(shown).to_have_count(2)
        await page.get_by_label("Filter by name").fill("rob")
        await expect(shown).to_have_count(1)
        await expect(shown).to_have_attribute("data-conversation-id", robin)
        await expect(shown.locator(".phone")).to_have_text("+1 ••• •••• 0101")
        await page.get_by_label("Filter by name").fill("nobody")
        await expect(shown).to_have_count(0)
        await expect(page.locator(".inbox-empty")).to_contain_text("No patient names match")
        await page.get_by_label("Filter by name").fill("")
        await expect(shown).to_have_count(2)


async def test_add_patient_errors_then_success(node: Node, clinic: Clinic,
                                               browser: Any) -> None:
    async with console(browser, node, clinic.staff_email) as page:
        add = page.get_by_role("button", name="Add patient")
        await add.click()
        await expect(add).to_have_attribute("aria-expanded", "true")
        name = page.get_by_label("Name", exact=True)
        phone = page.get_by_label("Phone")
        dob = page.get_by_label("Date of birth")
        submit = page.get_by_role("button", name="Add", exact=True)
        alert = page.locator("#add-error")
        await expect(name).to_be_focused()

        await name.fill("Jordan Lee")
        await phone.fill("555")
        await dob.fill("1990-02-03")
        await submit.click()
        await expect(alert).to_have_text("That is not a valid mobile number. Include the "
                                         "area code, e.g. (415) 555-0100.")
        await expect(alert).to_have_attribute("role", "alert")
        await expect(phone).to_have_attribute("aria-invalid", "true")
        await expect(phone).to_be_focused()

        await phone.fill("(415) 555-0142")
        await dob.fill("2999-01-01")
        await submit.click()
        await expect(alert).to_contain_text("That date of birth is not possible")
        await expect(dob).to_have_attribute("aria-invalid", "true")
        await expect(phone).not_to_have_attribute("aria-invalid", "true")

        await phone.fill("+1 415 555 0100")  # Pat Example's number
        await dob.fill("1990-02-03")
        await submit.click()
        await expect(alert).to_have_text("A patient with this phone number already exists. "
                                         "Find them in the inbox.")

        await phone.fill("(415) 555-0142")
        await submit.click()
        await expect(page.locator("#thread-title")).to_have_text("Jordan Lee")
        await expect(page.locator("#add-patient")).to_be_hidden()
        await expect(page.get_by_label("Message")).to_be_focused()
        assert page.url.split("#/c/")[1] in await inbox_order(page)
        new = row(page, page.url.split("#/c/")[1])
        await expect(new.locator(".phone")).to_have_text("+1 ••• •••• 0142")
        await expect(new).to_have_class("selected")
        await expect(page.locator(".thread-info")).to_have_text("No messages yet.")


async def test_older_history_on_scroll(node: Node, clinic: Clinic, browser: Any) -> None:
    """60 messages: the newest 50 first; scrolling up brings the other 10 above them, in
    order, each once, and what was on screen stays where it was."""
    sender = Sender("staff", clinic.staff_id, "Nurse Kim")
    for n in range(1, 61):
        await node.services.messaging.send(
            clinic.account_id, sender, clinic.conversation_id,
            SendRequest(f"h-{n}", f"Message number {n}", secure=True), SYSTEM)
    async with console(browser, node, clinic.staff_email) as page:
        await open_thread(page, clinic.conversation_id)
        assert await thread_seqs(page) == list(range(11, 61))
        scroller = page.locator(".log-scroll")
        # At the end, with the newest message in view.
        await expect(page.locator('#thread li[data-seq="60"]')).to_be_in_viewport()
        first_shown = page.locator('#thread li[data-seq="11"]')
        offset_of = ("(li) => li.getBoundingClientRect().top - "
                     "li.closest('.log-scroll').getBoundingClientRect().top")
        # Scroll to the top and measure at once (the scroll event, and so the load, come
        # after this script).
        before = await scroller.evaluate(
            "(el) => { el.scrollTop = 0; const li = el.querySelector('[data-seq=\"11\"]');"
            " return li.getBoundingClientRect().top - el.getBoundingClientRect().top; }")
        await expect(page.locator("#thread li[data-seq]")).to_have_count(60)
        assert await thread_seqs(page) == list(range(1, 61))
        await expect(page.get_by_role("button", name="Show earlier messages")).to_be_hidden()
        # Seq 11 was at the top of the view; it still is (within a pixel).
        assert abs(await first_shown.evaluate(offset_of) - before) <= 1
        # A live message still lands at the end, once.
        await publish_send(node, clinic, clinic.conversation_id, "Live one", secure=True)
        await expect(page.locator("#thread li[data-seq]")).to_have_count(61)
        assert await thread_seqs(page) == list(range(1, 62))


async def test_switching_threads_follows_one_at_a_time(node: Node, clinic: Clinic,
                                                       browser: Any, clock: FakeClock
                                                       ) -> None:
    """Opening another conversation leaves the first (unsubscribe): its messages stay out
    of the thread on screen, and are all there, once, on coming back. A notice (the
    secure link locked) shows in its own thread only."""
    import json

    robin = await add_patient(node, clinic, "Robin Second", "+14155550101")
    pat = clinic.conversation_id
    async with console(browser, node, clinic.staff_email) as page:
        frames: list[dict] = []
        page.on("websocket", lambda ws: ws.on(
            "framesent", lambda payload: frames.append(json.loads(payload))))
        await page.reload()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "online")
        await open_thread(page, pat)
        await publish_send(node, clinic, pat, "First for Pat", secure=True)
        await expect(page.locator("#thread li .body")).to_have_text(["First for Pat"])

        await open_thread(page, robin)
        await expect(page.locator("#thread-title")).to_have_text("Robin Second")
        clock.advance(minutes=1)
        await publish_send(node, clinic, pat, "Second for Pat", secure=True)
        await expect(page.locator("#inbox li").first).to_have_attribute(
            "data-conversation-id", pat)  # the inbox heard of it
        node.realtime.notice(clinic.account_id, pat, "link_locked")
        await publish_send(node, clinic, robin, "Hello Robin", secure=False)
        await expect(page.locator("#thread li .body")).to_have_text(["Hello Robin"])
        await expect(page.locator(".notice-banner")).to_have_count(0)

        await open_thread(page, pat)
        await expect(page.locator("#thread li .body")).to_have_text(
            ["First for Pat", "Second for Pat"])
        assert await thread_seqs(page) == [1, 2]
        node.realtime.notice(clinic.account_id, pat, "link_locked")
        banner = page.get_by_role("alert").filter(has_text="Link locked")
        await expect(banner).to_contain_text("wrong date-of-birth attempts")
        await banner.get_by_role("button", name="Dismiss").click()
        await expect(banner).to_have_count(0)

    kinds = [(f["type"], f.get("conversation_id")) for f in frames
             if f["type"] in ("subscribe", "unsubscribe")]
    assert kinds == [("subscribe", pat), ("unsubscribe", pat), ("subscribe", robin),
                     ("unsubscribe", robin), ("subscribe", pat)]
    last = [f for f in frames if f["type"] == "subscribe"][-1]
    assert last["after_seq"] == 2  # the history page had both; the replay starts after
