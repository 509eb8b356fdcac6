"""The outbox against a failing provider: transient errors and timeouts are retried with
backoff, each SMS is taken by the provider exactly once and in order per conversation,
and what was pending when a node stopped is sent by the next one."""

from __future__ import annotations

import secrets
from datetime import timedelta

from server import events
from server.audit import Actor
from server.clock import FakeClock
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.services.sms_worker import OutboxWorker
from server.sms.base import Sent, SmsProvider
from server.web.context import app_runtime
from tests.sms.support import (
    HANG,
    SERVER_ERROR,
    FakeTwilio,
    SmsClinic,
    TwilioRequest,
    add_patient,
    drain,
    manual_worker,
    message_row,
    opted_out,
    outbox_of,
    run_node,
    sent_ok,
    staff_socket,
    twilio_settings,
)


def to_any(*phones: str):
    return lambda request: request.form.get("To") in phones


def bodies_by_phone(requests: list[TwilioRequest], phones: list[str]) -> dict[str, list[str]]:
    return {phone: [r.form["Body"] for r in requests if r.form["To"] == phone]
            for phone in phones}


async def staff_sms(services: Services, sms: SmsClinic, body: str, client_msg_id: str) -> str:
    result = await services.messaging.send(
        sms.account_id, Sender("staff", sms.staff_id, "Nurse"), sms.conversation_id,
        SendRequest(client_msg_id, body, False), Actor("staff", sms.staff_id))
    return result.message.id


async def test_provider_errors_then_recovery_sends_each_once_in_order(
        database_url: str, master_key: bytes, clock: FakeClock, fake_twilio: FakeTwilio,
        services: Services, sms: SmsClinic) -> None:
    """First 20 requests 500: all 10 SMS of 3 conversations go out once, in order."""
    b_phone, b_conversation = await add_patient(services, sms, "Bea Second")
    c_phone, c_conversation = await add_patient(services, sms, "Cy Third")
    phones = [sms.phone, b_phone, c_phone]
    mine = to_any(*phones)
    fake_twilio.script(*[SERVER_ERROR] * 20, match=mine)
    # No backoff delay (the clock stands still) and attempts enough for 20 failures on
    # three heads of line; backoff itself is checked below with a worker run by hand.
    settings = twilio_settings(database_url, fake_twilio, sms_retry_base_seconds=0,
                               sms_max_attempts=30)
    plan = [(sms.conversation_id, "A1"), (b_conversation, "B1"), (sms.conversation_id, "A2"),
            (c_conversation, "C1"), (c_conversation, "C2"), (sms.conversation_id, "A3"),
            (b_conversation, "B2"), (c_conversation, "C3"), (sms.conversation_id, "A4"),
            (b_conversation, "B3")]
    async with run_node(settings, master_key, clock) as node, \
            staff_socket(node, sms.staff_email, sms.conversation_id, b_conversation,
                         c_conversation) as ws, \
            node.login(sms.staff_email) as client:
        ids = [(await sent_ok(client, conversation, body, body))["id"]
               for conversation, body in plan]
        await fake_twilio.wait_for(lambda f: len(f.sent(mine)) == 10, timeout=30)
        for message_id in ids:
            await ws.wait_type("status", message_id=message_id, status="sent", timeout=10)

    assert len([r for r in fake_twilio.seen(mine) if r.status == 500]) == 20
    sent = bodies_by_phone(fake_twilio.sent(mine), phones)
    assert sent == {sms.phone: ["A1", "A2", "A3", "A4"], b_phone: ["B1", "B2", "B3"],
                    c_phone: ["C1", "C2", "C3"]}
    # Not even a failed attempt ever jumped ahead of an earlier SMS of its conversation.
    for phone, attempts in bodies_by_phone(fake_twilio.seen(mine), phones).items():
        assert attempts == sorted(attempts), phone
    rows = [row for conversation in (sms.conversation_id, b_conversation, c_conversation)
            for row in await outbox_of(services, conversation)]
    assert {row["status"] for row in rows} == {"sent"}
    assert sum(row["attempts"] for row in rows) == 30
    for message_id in ids:
        assert (await message_row(services, message_id))["status"] == "sent"


async def test_pending_sms_go_out_after_the_node_restarts(
        database_url: str, master_key: bytes, clock: FakeClock, fake_twilio: FakeTwilio,
        services: Services, sms: SmsClinic) -> None:
    """SMS queued while the provider was down survive the node and are sent by the next."""
    b_phone, b_conversation = await add_patient(services, sms, "Bea Second")
    phones = [sms.phone, b_phone]
    mine = to_any(*phones)
    fake_twilio.always(SERVER_ERROR, match=mine)
    settings = twilio_settings(database_url, fake_twilio, sms_retry_base_seconds=5)
    plan = [(sms.conversation_id, "A1"), (b_conversation, "B1"), (sms.conversation_id, "A2"),
            (b_conversation, "B2"), (sms.conversation_id, "A3")]
    async with run_node(settings, master_key, clock) as first, \
            first.login(sms.staff_email) as client:
        for conversation, body in plan:
            await sent_ok(client, conversation, body, body)
        # Both heads of line were tried (and refused) before the node goes away.
        await fake_twilio.wait_for(
            lambda f: {r.form["Body"] for r in f.seen(mine) if r.status == 500} ==
            {"A1", "B1"})
    assert fake_twilio.sent(mine) == []
    rows = [*await outbox_of(services, sms.conversation_id),
            *await outbox_of(services, b_conversation)]
    assert len(rows) == 5 and all(row["status"] in ("pending", "sending") for row in rows)

    fake_twilio.clear_scripts()
    clock.advance(seconds=120)  # past any backoff (5 s) and any lease (60 s) left behind
    async with run_node(settings, master_key, clock):
        await fake_twilio.wait_for(lambda f: len(f.sent(mine)) == 5)
    assert bodies_by_phone(fake_twilio.sent(mine), phones) == \
        {sms.phone: ["A1", "A2", "A3"], b_phone: ["B1", "B2"]}
    rows = [*await outbox_of(services, sms.conversation_id),
            *await outbox_of(services, b_conversation)]
    assert {row["status"] for row in rows} == {"sent"}


async def test_send_cut_by_a_stopped_node_is_retried_after_its_lease(
        database_url: str, master_key: bytes, clock: FakeClock, fake_twilio: FakeTwilio,
        services: Services, sms: SmsClinic) -> None:
    """A node stopped mid-send leaves a lease; the next node sends the row once it ends."""
    mine = to_any(sms.phone)
    fake_twilio.script(HANG, match=mine)
    settings = twilio_settings(database_url, fake_twilio)
    async with run_node(settings, master_key, clock) as first, \
            first.login(sms.staff_email) as client:
        await sent_ok(client, sms.conversation_id, "first", "c1")
        await sent_ok(client, sms.conversation_id, "second", "c2")
        await fake_twilio.wait_for(lambda f: len(f.seen(mine)) == 1)
        # The node dies mid-send: a crash, not a drain (a drain waits for the answer).
        await app_runtime(first.app).sms_worker.stop(timeout=0)
    head, tail = await outbox_of(services, sms.conversation_id)
    assert head["status"] == "sending" and head["attempts"] == 1
    assert head["claimed_until"] == clock.now() + timedelta(seconds=60)
    assert tail["status"] == "pending" and tail["attempts"] == 0

    async with run_node(settings, master_key, clock) as second:
        await drain(app_runtime(second.app).sms_worker)  # the lease still holds: not taken
        assert len(fake_twilio.seen(mine)) == 1
        clock.advance(seconds=61)
        app_runtime(second.app).sms_worker.wake()
        await fake_twilio.wait_for(lambda f: len(f.sent(mine)) == 2)
    assert [r.form["Body"] for r in fake_twilio.sent(mine)] == ["first", "second"]
    head, tail = await outbox_of(services, sms.conversation_id)
    assert (head["status"], head["attempts"], tail["status"]) == ("sent", 2, "sent")


async def test_timeout_is_retried_after_backoff(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic,
        clock: FakeClock) -> None:
    """No answer within the client timeout is transient: retried once the backoff passes."""
    mine = to_any(sms.phone)
    fake_twilio.script(HANG, match=mine)
    settings = twilio_settings(database_url, fake_twilio, sms_retry_base_seconds=2)
    published: list[events.StatusEvent] = []
    worker = manual_worker(services, settings, fake_twilio, published, timeout=0.3)
    try:
        message_id = await staff_sms(services, sms, "Bring your insurance card", "c1")
        await drain(worker)
        [row] = await outbox_of(services, sms.conversation_id)
        assert (row["status"], row["attempts"], row["error_code"]) == \
            ("pending", 1, "timeout")
        assert clock.now() < row["next_attempt_at"] <= clock.now() + timedelta(seconds=2)
        assert (await message_row(services, message_id))["status"] == "queued"

        await drain(worker)  # not due yet
        assert len(fake_twilio.seen(mine)) == 1
        clock.advance(seconds=2)
        await drain(worker)
        [request] = fake_twilio.sent(mine)
        assert request.form["Body"] == "Bring your insurance card"
        [row] = await outbox_of(services, sms.conversation_id)
        assert (row["status"], row["attempts"], row["provider_sid"]) == \
            ("sent", 2, request.sid)
        assert [(e.message_id, e.status) for e in published
                if e.conversation_id == sms.conversation_id] == [(message_id, "sent")]
    finally:
        await worker.stop()


async def test_backoff_grows_then_gives_up(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic,
        clock: FakeClock) -> None:
    """5xx retries wait at most base·2^(n-1); after the last attempt the SMS fails."""
    mine = to_any(sms.phone)
    fake_twilio.always(SERVER_ERROR, match=mine)
    settings = twilio_settings(database_url, fake_twilio, sms_retry_base_seconds=1,
                               sms_max_attempts=4)
    published: list[events.StatusEvent] = []
    worker = manual_worker(services, settings, fake_twilio, published)
    try:
        message_id = await staff_sms(services, sms, "Your ride is booked", "c1")
        for attempt in range(1, 4):
            await drain(worker)
            [row] = await outbox_of(services, sms.conversation_id)
            assert (row["status"], row["attempts"], row["error_code"]) == \
                ("pending", attempt, "500")
            bound = timedelta(seconds=2 ** (attempt - 1))
            assert clock.now() <= row["next_attempt_at"] <= clock.now() + bound
            clock.advance(seconds=bound.total_seconds())
        await drain(worker)
        [row] = await outbox_of(services, sms.conversation_id)
        assert (row["status"], row["attempts"], row["error_code"]) == ("failed", 4, "500")
        assert len(fake_twilio.seen(mine)) == 4
        assert (await message_row(services, message_id))["status"] == "failed"
        assert [(e.status, e.error_code) for e in published
                if e.conversation_id == sms.conversation_id] == [("failed", "500")]
        clock.advance(seconds=3600)
        await drain(worker)
        assert len(fake_twilio.seen(mine)) == 4
    finally:
        await worker.stop()


async def test_other_4xx_fails_at_once_without_opting_out(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic
        ) -> None:
    """A 4xx other than 21610 is permanent: one attempt, failed, patient still opted in."""
    mine = to_any(sms.phone)
    fake_twilio.script((400, {"code": 21211, "message": "Invalid 'To' Phone Number"}),
                       match=mine)
    settings = twilio_settings(database_url, fake_twilio)
    published: list[events.StatusEvent] = []
    worker = manual_worker(services, settings, fake_twilio, published)
    try:
        message_id = await staff_sms(services, sms, "Hello", "c1")
        await drain(worker)
        [row] = await outbox_of(services, sms.conversation_id)
        assert (row["status"], row["attempts"], row["error_code"]) == ("failed", 1, "21211")
        assert (await message_row(services, message_id))["status"] == "failed"
        assert not await opted_out(services, sms.patient_id)
    finally:
        await worker.stop()


async def test_lease_ran_out_after_the_last_attempt_fails_the_sms(
        database_url: str, master_key: bytes, clock: FakeClock, fake_twilio: FakeTwilio,
        services: Services, sms: SmsClinic) -> None:
    """A row whose only allowed attempt was cut by a stopped node is failed, not resent."""
    mine = to_any(sms.phone)
    fake_twilio.script(HANG, match=mine)
    settings = twilio_settings(database_url, fake_twilio, sms_max_attempts=1)
    async with run_node(settings, master_key, clock) as first, \
            first.login(sms.staff_email) as client:
        message = await sent_ok(client, sms.conversation_id, "only once", "c1")
        await fake_twilio.wait_for(lambda f: len(f.seen(mine)) == 1)
        # The node dies mid-send: a crash, not a drain (a drain waits for the answer).
        await app_runtime(first.app).sms_worker.stop(timeout=0)
    clock.advance(seconds=61)
    published: list[events.StatusEvent] = []
    worker = manual_worker(services, settings, fake_twilio, published)
    try:
        await drain(worker)
    finally:
        await worker.stop()
    assert len(fake_twilio.seen(mine)) == 1
    [row] = await outbox_of(services, sms.conversation_id)
    assert (row["status"], row["error_code"]) == ("failed", "lease_expired")
    assert (await message_row(services, message["id"]))["status"] == "failed"
    assert [(e.message_id, e.status) for e in published
            if e.conversation_id == sms.conversation_id] == [(message["id"], "failed")]


class BrokenOnceProvider(SmsProvider):
    """Raises an unexpected error on its first SMS to ``phone``, then takes everything."""

    name = "broken-once"

    def __init__(self, phone: str) -> None:
        self.phone = phone
        self.calls: list[str] = []  # bodies sent to ``phone``

    async def send(self, *, account_id: str, to: str, from_: str, body: str) -> Sent:
        if to != self.phone:
            return Sent(sid="SM" + secrets.token_hex(16), status="queued")
        self.calls.append(body)
        if len(self.calls) == 1:
            raise RuntimeError("provider bug")
        return Sent(sid="SM" + secrets.token_hex(16), status="queued")


async def test_unexpected_provider_error_is_retried(
        database_url: str, fake_twilio: FakeTwilio, services: Services, sms: SmsClinic,
        clock: FakeClock) -> None:
    """A provider raising something unexpected is retried with backoff, not left leased."""
    settings = twilio_settings(database_url, fake_twilio, sms_retry_base_seconds=1)
    provider = BrokenOnceProvider(sms.phone)
    published: list[events.StatusEvent] = []
    worker = OutboxWorker(db=services.db, keyring=services.keyring, clock=clock,
                          settings=settings, provider=provider, metrics=services.metrics,
                          publish=published.append, node_id="test")
    message_id = await staff_sms(services, sms, "Lab is closed Monday", "c1")
    await drain(worker)
    [row] = await outbox_of(services, sms.conversation_id)
    assert (row["status"], row["attempts"], row["error_code"]) == \
        ("pending", 1, "provider_error")
    clock.advance(seconds=1)
    await drain(worker)
    [row] = await outbox_of(services, sms.conversation_id)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert provider.calls == ["Lab is closed Monday"] * 2
    assert (await message_row(services, message_id))["status"] == "sent"
