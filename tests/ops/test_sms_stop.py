"""The SMS worker at shutdown (issue 8): ``stop`` lets the send in progress finish and
be recorded, so no row is left ``sending`` (its lease would run out and the SMS go
twice); only a provider that outlasts the stop bound is cut off."""

from __future__ import annotations

import asyncio

from server.audit import SYSTEM
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.services.sms_worker import OutboxWorker
from server.sms.base import Sent, SmsProvider
from tests.sms.support import outbox_of, sms_clinic


class GatedProvider(SmsProvider):
    """Takes each SMS only once ``gate`` is set; records who it was for."""

    name = "gated"

    def __init__(self, phone: str) -> None:
        self.phone = phone
        self.reached = asyncio.Event()  # the clinic's SMS is in flight
        self.gate = asyncio.Event()
        self.sent: list[str] = []
        self.closed = False

    async def send(self, *, account_id: str, to: str, from_: str, body: str) -> Sent:
        if to == self.phone:
            self.reached.set()
        await self.gate.wait()
        self.sent.append(to)
        return Sent(sid=f"SM{len(self.sent)}", status="queued")

    async def close(self) -> None:
        self.closed = True


async def queued_sms(services: Services) -> tuple[str, GatedProvider, OutboxWorker]:
    """A clinic with one SMS in the outbox, and a running worker whose provider holds it."""
    clinic = await sms_clinic(services)
    await services.messaging.send(
        clinic.account_id, Sender("staff", clinic.staff_id, "Nurse"), clinic.conversation_id,
        SendRequest(client_msg_id="stop-1", body="see you at 3"), SYSTEM)
    provider = GatedProvider(clinic.phone)
    worker = OutboxWorker(db=services.db, keyring=services.keyring, clock=services.clock,
                          settings=services.settings, provider=provider,
                          metrics=services.metrics, publish=lambda event: None,
                          node_id="ops")
    worker.start()
    async with asyncio.timeout(10):
        await provider.reached.wait()
    return clinic.conversation_id, provider, worker


async def test_stop_waits_for_the_send_in_progress(services: Services) -> None:
    conversation_id, provider, worker = await queued_sms(services)
    stopping = asyncio.create_task(worker.stop())
    provider.gate.set()  # the provider answers after the stop began
    async with asyncio.timeout(10):
        await stopping
    (row,) = await outbox_of(services, conversation_id)
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert provider.phone in provider.sent and provider.closed


async def test_stop_gives_up_on_a_provider_that_outlasts_it(services: Services) -> None:
    conversation_id, provider, worker = await queued_sms(services)
    async with asyncio.timeout(10):
        await worker.stop(timeout=0.2)
    (row,) = await outbox_of(services, conversation_id)
    # Left to its lease (another node sends it when the lease runs out), never lost.
    assert (row["status"], row["attempts"]) == ("sending", 1)
    assert provider.sent == [] and provider.closed
