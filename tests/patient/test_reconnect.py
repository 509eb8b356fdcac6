"""The secure page across a server restart, in headless Chromium (issue 5, item 4): it
reconnects by itself, shows what was sent meanwhile exactly once and in order, and a
reply typed while the server was down goes out once, with the id it was given; a reply
refused ``rate_limited`` is resent by itself, once."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import expect

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import Sender, SendRequest
from server.runtime import Services
from tests.conftest import Clinic
from tests.patient.support import DOB, Node, new_link, run_node
from tests.realtime.wsclient import connect, staff_cookie
from tests.sms.support import count_messages

RECONNECT_MS = 15_000  # backoff with jitter: a few tries while the server is down


async def staff_send(node: Node, clinic: Clinic, client_msg_id: str, body: str) -> None:
    async with node.login(clinic.staff_email) as api:
        response = await api.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                  json={"client_msg_id": client_msg_id, "body": body,
                                        "secure": True})
    assert response.status_code == 201, response.text


async def sign_in(phone: Any, node: Node, clinic: Clinic) -> None:
    await phone.goto(f"{node.url}/s/{await new_link(node, clinic)}")
    await phone.get_by_label("Date of birth").fill(DOB)
    await phone.get_by_role("button", name="Continue").click()
    await expect(phone.locator("#connection")).to_have_text("Connected")


async def test_page_resumes_after_a_restart(database_url: str, master_key: bytes,
                                            clock: FakeClock, services: Services,
                                            clinic: Clinic, phone: Any) -> None:
    theirs = phone.locator("#thread li.theirs .body")
    async with run_node(database_url, master_key, clock) as first:
        port = first.port
        await staff_send(first, clinic, "r-1", "Before the restart")
        await sign_in(phone, first, clinic)
        await expect(theirs).to_have_text(["Before the restart"])
    await expect(phone.locator("#connection")).to_have_text("Offline: reconnecting…")

    # While no server runs at all: stored straight through the service.
    sender = Sender("staff", clinic.staff_id, "Nurse")
    for n in (1, 2):
        await services.messaging.send(
            clinic.account_id, sender, clinic.conversation_id,
            SendRequest(f"gap-{n}", f"While down {n}", secure=True), SYSTEM)

    async with run_node(database_url, master_key, clock, port=port) as second:
        await staff_send(second, clinic, "r-3", "Just after the restart")
        expected = ["Before the restart", "While down 1", "While down 2",
                    "Just after the restart"]
        await expect(theirs).to_have_text(expected, timeout=RECONNECT_MS)
        await expect(phone.locator("#connection")).to_have_text("Connected")
        await staff_send(second, clinic, "r-4", "Live again")
        await expect(theirs).to_have_text([*expected, "Live again"])
        seqs = await phone.locator("#thread li").evaluate_all(
            "items => items.map(li => Number(li.dataset.seq))")
        assert seqs == [1, 2, 3, 4, 5]


async def test_reply_typed_offline_is_sent_once(database_url: str, master_key: bytes,
                                                clock: FakeClock, services: Services,
                                                clinic: Clinic, phone: Any) -> None:
    sent_frames: list[dict] = []
    phone.on("websocket", lambda ws: ws.on(
        "framesent", lambda payload: sent_frames.append(json.loads(payload))))
    async with run_node(database_url, master_key, clock) as first:
        port = first.port
        await sign_in(phone, first, clinic)
    await expect(phone.locator("#connection")).to_have_text("Offline: reconnecting…")
    await phone.get_by_label("Your reply").fill("Typed while offline")
    await phone.get_by_role("button", name="Send").click()
    mine = phone.locator("#thread li.mine")
    await expect(mine.locator(".status")).to_have_text(["Sending…"])

    async with run_node(database_url, master_key, clock, port=port) as second, \
            connect(second.url, await staff_cookie(second, clinic.staff_email)) as staff:
        await staff.wait_type("ready")
        await staff.send(type="subscribe", ref="s", conversation_id=clinic.conversation_id)
        await staff.wait_type("subscribed", ref="s")
        message = await staff.wait_type("message", timeout=RECONNECT_MS,
                                        body="Typed while offline")
        await expect(mine.locator(".status")).to_have_text(["Sent"])
        await expect(mine.locator(".body")).to_have_text(["Typed while offline"])
        # Its echo reached the page too; nothing more is on its way.
        await expect(mine).to_have_attribute("data-seq", str(message["seq"]))
        await staff.send(type="ping", ref="p")
        await staff.wait_type("pong", ref="p")
    sends = [f for f in sent_frames if f["type"] == "send"]
    assert sends and {f["client_msg_id"] for f in sends} == {message["client_msg_id"]}
    assert [f for f in staff.frames if f["type"] == "message"] == [message]
    assert await count_messages(services, clinic.conversation_id) == 1


async def test_rate_limited_reply_is_resent_once(database_url: str, master_key: bytes,
                                                 clock: FakeClock, services: Services,
                                                 clinic: Clinic, phone: Any) -> None:
    """One frame per 2 s: the page's subscribe spends it, so its reply is refused
    ``rate_limited``; the page resends it (same client_msg_id) after the wait it was told,
    shows no failure, and the reply is stored once."""
    received: list[dict] = []
    phone.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: received.append(json.loads(payload))))
    async with run_node(database_url, master_key, clock, ws_rate_per_second=0.5,
                        ws_rate_burst=1) as node, \
            connect(node.url, await staff_cookie(node, clinic.staff_email)) as staff:
        await staff.wait_type("ready")
        await staff.send(type="subscribe", ref="s", conversation_id=clinic.conversation_id)
        await staff.wait_type("subscribed", ref="s")
        await sign_in(phone, node, clinic)
        await phone.get_by_label("Your reply").fill("Sent while throttled")
        await phone.get_by_role("button", name="Send").click()
        message = await staff.wait_type("message", body="Sent while throttled")
        mine = phone.locator("#thread li.mine")
        await expect(mine.locator(".status")).to_have_text(["Sent"])
    refused = [f for f in received if f["type"] == "error"
               and f.get("client_msg_id") == message["client_msg_id"]]
    assert refused and {f["code"] for f in refused} == {"rate_limited"}
    assert [f for f in staff.frames if f["type"] == "message"] == [message]
    assert await count_messages(services, clinic.conversation_id) == 1
