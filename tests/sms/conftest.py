"""The SMS bridge's fixtures: a fake Twilio per test, settings that point the node at it,
and a node of our own (its runtime at hand)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.clock import FakeClock
from server.runtime import Services
from server.settings import Settings
from tests.sms.support import FakeTwilio, Node, SmsClinic, run_node, sms_clinic, twilio_settings


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio.running() as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, fake_twilio: FakeTwilio) -> Settings:
    """SMS_PROVIDER=twilio against the fake, PUBLIC_URL unlike the address tests use."""
    return twilio_settings(database_url, fake_twilio)


@pytest.fixture
async def node(settings: Settings, master_key: bytes, clock: FakeClock
               ) -> AsyncIterator[Node]:
    async with run_node(settings, master_key, clock) as running:
        yield running


@pytest.fixture
async def sms(services: Services) -> SmsClinic:
    """A clinic with an SMS number of its own and a patient with a phone of their own."""
    return await sms_clinic(services)
