"""Fixtures for the patient's secure page: a node of our own (see ``support.run_node``)
and a phone-sized page in the shared headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.clock import FakeClock
from tests.patient.support import PHONE_VIEWPORT, Node, run_node


@pytest.fixture
async def node(database_url: str, master_key: bytes, clock: FakeClock
               ) -> AsyncIterator[Node]:
    async with run_node(database_url, master_key, clock) as running:
        yield running


@pytest.fixture
async def phone(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) at phone size; its page."""
    context = await browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()
