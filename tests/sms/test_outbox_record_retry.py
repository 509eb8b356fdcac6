"""Regression for the duplicate SMS the fault suite's pg-terminate run found (tests/faults):
an SMS the provider took must be recorded even when the store connection drops at that
moment; otherwise the row stays ``sending`` until its lease runs out and the patient gets
it twice."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from server import events
from server.runtime import Services
from server.settings import Settings
from server.store.db import Database
from tests.sms.support import (
    FakeTwilio,
    drain,
    manual_worker,
    outbox_of,
    sms_clinic,
    twilio_settings,
)


class DropsOneWrite:
    """The store, except that write transaction number ``fail_at`` fails to start as on
    a connection PostgreSQL has just terminated (an ``OSError`` from the socket)."""

    def __init__(self, db: Database, fail_at: int) -> None:
        self._db = db
        self._fail_at = fail_at
        self.writes = 0

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator:
        self.writes += 1
        if self.writes == self._fail_at:
            raise ConnectionResetError("connection was closed in the middle of operation")
        async with self._db.write() as conn:
            yield conn


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio.running() as fake:
        yield fake


async def test_sms_taken_by_the_provider_is_recorded_through_a_dropped_connection(
        database_url: str, master_key: bytes, services: Services,
        fake_twilio: FakeTwilio) -> None:
    sms = await sms_clinic(services)
    settings: Settings = twilio_settings(database_url, fake_twilio)
    flaky = DropsOneWrite(services.db, fail_at=2)  # 1: the claim; 2: recording the send
    published: list[events.StatusEvent] = []
    worker = manual_worker(SimpleNamespace(db=flaky, keyring=services.keyring,
                                           clock=services.clock, metrics=services.metrics),
                           settings, fake_twilio, published)
    try:
        await services.messaging.send(*staff_sms(sms))
        await drain(worker)
    finally:
        await worker.stop()
    [row] = await outbox_of(services, sms.conversation_id)
    assert row["status"] == "sent" and len(fake_twilio.sent(
        lambda r: r.form.get("To") == sms.phone)) == 1


def staff_sms(sms) -> tuple:
    """``Messaging.send`` arguments for one staff SMS (no PHI in the body)."""
    from server.audit import Actor
    from server.protocol import Sender, SendRequest

    return (sms.account_id, Sender("staff", sms.staff_id, "Nurse"), sms.conversation_id,
            SendRequest("rec-1", "Your results are ready", False), Actor("staff", sms.staff_id))
