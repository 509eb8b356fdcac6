"""Issue 6, acceptance 5, in real headless Chromium: the server is stopped and started
again (same port) under an open console. The console reconnects by itself, shows what
arrived meanwhile exactly once and in order, and a message typed during the outage is
kept ("Waiting to send") and sent once, with the id it was given; a settings change
made meanwhile (portal off) is picked up from the `ready` frame."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.store.tables import accounts
from tests.conftest import Clinic
from tests.patient.support import run_node
from tests.staff.support import (
    RECONNECT_MS,
    browser_page,
    count_messages,
    inbound_sms,
    open_thread,
    publish_send,
    row,
    sign_in,
    stored_bodies,
    thread_seqs,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_console_resumes_after_a_restart(database_url: str, master_key: bytes,
                                               clock: FakeClock, services: Services,
                                               clinic: Clinic, browser: Any) -> None:
    sent_frames: list[dict] = []
    async with browser_page(browser) as page:
        page.on("websocket", lambda ws: ws.on(
            "framesent", lambda payload: sent_frames.append(json.loads(payload))))
        bodies = page.locator("#thread li .body")
        async with run_node(database_url, master_key, clock) as first:
            port = first.port
            await inbound_sms(first, clinic, clinic.conversation_id, clinic.patient_id,
                              "Before the restart")
            await page.goto(f"{first.url}/")
            await sign_in(page, clinic.staff_email)
            await page.evaluate("window.notReloaded = true")
            await open_thread(page, clinic.conversation_id)
            await expect(bodies).to_have_text(["Before the restart"])
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", re.compile("offline|connecting"))
        await expect(page.locator("#connection")).to_have_text(
            re.compile("Offline|Connecting"))

        # While no server runs: two messages stored straight through the service,
        sender = Sender("staff", clinic.admin_id, "Dr. Rivera")
        for n in (1, 2):
            await services.messaging.send(
                clinic.account_id, sender, clinic.conversation_id,
                SendRequest(f"gap-{n}", f"While down {n}", secure=True), SYSTEM)
        # ... the portal turned off (the console hears of it from `ready` on return) ...
        async with services.db.write() as conn:
            await conn.execute(update(accounts).where(accounts.c.id == clinic.account_id)
                               .values(portal_active=False))
        # ... and one typed in the console, kept until the server is back.
        await page.get_by_label("Message").fill("Typed while offline")
        await page.get_by_label("Message").press("Enter")
        waiting = page.locator("#thread li.pending")
        await expect(waiting.locator(".body")).to_have_text(["Typed while offline"])
        await expect(waiting.locator(".status")).to_have_text(["Waiting to send"])

        async with run_node(database_url, master_key, clock, port=port) as second:
            expected = ["Before the restart", "While down 1", "While down 2",
                        "Typed while offline"]
            await expect(bodies).to_have_text(expected, timeout=RECONNECT_MS)
            await expect(page.locator("#connection")).to_have_attribute("data-state",
                                                                        "online")
            await expect(page.get_by_role("switch", name="Secure Chat")).to_have_count(0)
            await expect(page.locator("#portal-off")).to_be_visible()
            typed = page.locator("#thread li").last
            await expect(typed).to_have_attribute("data-seq", "4")
            await expect(typed).to_have_attribute("data-channel", "sms")
            await expect(typed.locator(".status")).to_have_text(
                re.compile("^(Queued|Sent|Delivered)$"))

            # Live again: a new message shows once, at the end; the inbox follows.
            await publish_send(second, clinic, clinic.conversation_id, "Live again",
                               secure=False)
            await expect(bodies).to_have_text([*expected, "Live again"])
            assert await thread_seqs(page) == [1, 2, 3, 4, 5]
            await expect(row(page, clinic.conversation_id).locator(".when")).not_to_be_empty()
            assert await page.evaluate("window.notReloaded") is True

    sends = [f for f in sent_frames if f["type"] == "send"]
    assert sends and {f["client_msg_id"] for f in sends} == {sends[0]["client_msg_id"]}
    assert await count_messages(services, clinic.conversation_id) == 5
    stored = await stored_bodies(services, clinic, clinic.conversation_id)
    assert stored.count("Typed while offline") == 1
