"""Fixtures for the staff console's browser tests: a node of our own (see
``tests/patient/support.run_node``: its own address is its public URL and allowed
origin, so a browser on it passes the Origin checks)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.clock import FakeClock
from tests.patient.support import Node, run_node


@pytest.fixture
async def node(database_url: str, master_key: bytes, clock: FakeClock
               ) -> AsyncIterator[Node]:
    async with run_node(database_url, master_key, clock) as running:
        yield running
