"""Helpers for the staff console's browser tests: a signed-in console in a browser context
of its own (watched for script errors and CSP violations), the patient's secure page
beside it, and messages stored and published the way the server's own paths do."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import expect
from sqlalchemy import func, select, update

from server.audit import SYSTEM
from server.protocol import CreatePatientRequest, Sender, SendRequest
from server.runtime import Services
from server.services.opt_out import opt_out_event
from server.services.sending import message_event
from server.store.tables import messages, patients, sessions
from server.web.context import app_runtime
from tests.conftest import PASSWORD, Clinic
from tests.patient.support import DOB, PHONE_VIEWPORT, Node, new_link

DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}
RECONNECT_MS = 15_000  # backoff with jitter: a few tries while a server is down


class Problems(list):
    """Script errors and CSP violations a page reported."""


@contextlib.asynccontextmanager
async def browser_page(browser: Any, *, viewport: dict = DESKTOP, **options: Any
                       ) -> AsyncIterator[Any]:
    """A page in a fresh context (no cookies); fails the test if the page raised a script
    error or logged a Content-Security-Policy violation."""
    context = await browser.new_context(viewport=viewport, timezone_id="UTC",
                                        locale="en-US", **options)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    problems = Problems()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    try:
        yield page
        assert problems == [], problems
    finally:
        await context.close()


@contextlib.asynccontextmanager
async def console(browser: Any, node: Node, email: str, *, viewport: dict = DESKTOP
                  ) -> AsyncIterator[Any]:
    """The console at ``node``, signed in as ``email``, showing the inbox."""
    async with browser_page(browser, viewport=viewport) as page:
        await page.goto(f"{node.url}/")
        await sign_in(page, email)
        yield page


async def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "online")
    await expect(page.locator("#inbox li").first).to_be_visible()


def row(page: Any, conversation_id: str) -> Any:
    """The inbox row of a conversation."""
    return page.locator(f'#inbox li[data-conversation-id="{conversation_id}"]')


async def open_thread(page: Any, conversation_id: str) -> None:
    await row(page, conversation_id).get_by_role("link").click()
    await expect(page.locator("#thread-title")).not_to_have_text("")
    await expect(page.locator("#thread")).not_to_have_attribute("aria-busy", "true")


async def inbox_order(page: Any) -> list[str]:
    return await page.locator("#inbox li").evaluate_all(
        "items => items.map(li => li.dataset.conversationId)")


async def thread_seqs(page: Any) -> list[int]:
    return await page.locator("#thread li[data-seq]").evaluate_all(
        "items => items.map(li => Number(li.dataset.seq))")


@contextlib.asynccontextmanager
async def patient_page(browser: Any, node: Node, clinic: Clinic) -> AsyncIterator[Any]:
    """The clinic patient's secure page, verified and connected, at phone size."""
    async with browser_page(browser, viewport=PHONE_VIEWPORT, is_mobile=True,
                            has_touch=True) as page:
        await page.goto(f"{node.url}/s/{await new_link(node, clinic)}")
        await page.get_by_label("Date of birth").fill(DOB)
        await page.get_by_role("button", name="Continue").click()
        await expect(page.locator("#connection")).to_have_text("Connected")
        yield page


# --- the store and the server's own paths -------------------------------------------------

async def add_patient(node: Node, clinic: Clinic, name: str, phone: str,
                      dob: str = "1975-03-02") -> str:
    """Another patient of the clinic; their conversation id."""
    _, conversation_id = await node.services.patients.create(
        clinic.account_id, CreatePatientRequest(name, phone, dob), SYSTEM)
    return conversation_id


async def unknown_patient(node: Node, clinic: Clinic, phone: str) -> str:
    """A patient made for an SMS from a number no patient had; the conversation id."""
    _, conversation_id, _ = await node.services.patients.for_phone(
        clinic.account_id, phone, "Unknown sender")
    return conversation_id


async def opt_out(node: Node, conversation_id: str) -> None:
    """As if the patient had replied STOP."""
    from server.store.tables import conversations

    async with node.services.db.write() as conn:
        patient_id = (await conn.execute(select(conversations.c.patient_id).where(
            conversations.c.id == conversation_id))).scalar_one()
        await conn.execute(update(patients).where(patients.c.id == patient_id)
                           .values(opted_out=True))


async def publish_send(node: Node, clinic: Clinic, conversation_id: str, body: str, *,
                       secure: bool, sender: Sender | None = None) -> dict:
    """Store and publish a message as the server's send path does (REST and WebSocket
    share it); the stored message as a dict."""
    sender = sender or Sender("staff", clinic.staff_id, "Nurse Kim")
    result = await app_runtime(node.app).sending.send(
        clinic.account_id, sender, conversation_id,
        SendRequest(f"t-{secrets.token_hex(6)}", body, secure), SYSTEM)
    message = result.message
    return {"id": message.id, "seq": message.seq, "client_msg_id": message.client_msg_id}


async def inbound_sms(node: Node, clinic: Clinic, conversation_id: str, patient_id: str,
                      body: str) -> int:
    """An SMS from the patient, stored and published as the inbound webhook does (with
    the opt-out change of a STOP or START); its seq."""
    services = node.services
    result = await services.messaging.receive_sms(
        clinic.account_id, conversation_id, Sender("patient", patient_id, ""),
        f"SM{secrets.token_hex(16)}", body)
    node.realtime.publish(message_event(node.realtime.node_id, clinic.account_id, result))
    if result.opt_out is not None:
        node.realtime.publish(opt_out_event(node.realtime.node_id, result.opt_out))
    return result.message.seq


async def stored_bodies(services: Services, clinic: Clinic, conversation_id: str
                        ) -> list[str]:
    """Every stored message body of a conversation, decrypted, in seq order."""
    page = await services.messaging.history(clinic.account_id, conversation_id,
                                            before_seq=None, limit=200, actor=SYSTEM)
    return [message.body for message in page.messages]


async def count_messages(services: Services, conversation_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(messages).where(
            messages.c.conversation_id == conversation_id))).scalar_one()


async def open_staff_sessions(services: Services, staff_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(sessions).where(
            sessions.c.staff_id == staff_id, sessions.c.ended_at.is_(None)))).scalar_one()


async def simulated_sms(node: Node, clinic: Clinic) -> list[str]:
    """The bodies the SMS simulator delivered for the clinic, newest first."""
    inbox = await app_runtime(node.app).sms_provider.inbox()
    return [sms["body"] for sms in inbox if sms["account_id"] == clinic.account_id]
