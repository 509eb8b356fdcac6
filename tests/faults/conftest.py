"""The fault suite's shared setup: one seeded template database for the session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from loadtest.nodes import private_postgres
from tests.conftest import PG_ADMIN_URL
from tests.faults.seeding import World, seed_world


class Template:
    def __init__(self, name: str, world: World) -> None:
        self.name = name
        self.world = world


@pytest.fixture(scope="session")
def fault_template(master_key: bytes) -> Iterator[Template]:
    """A migrated, seeded database nobody stays connected to (a ``TEMPLATE`` for each
    run's own copy), dropped at the end of the session."""
    manager = private_postgres(PG_ADMIN_URL, prefix="securechat_faulttpl")
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(manager.__aenter__())
        try:
            world = loop.run_until_complete(seed_world(url, master_key))
            yield Template(make_url(url).database, world)
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()
