"""Broker fixtures, one per bus: each test runs on the in-memory bus and on Redis.

``backend`` uses the shared Redis, so tests there use fresh channel names and never see
each other's traffic. ``isolated_backend`` gives the redis half a server of the test's
own (``private_redis``), for outages and for the control channel every node shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.brokers.support import Backend, MemoryBackend, RedisBackend


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Brokers on one bus: an in-process bus, or the shared Redis."""
    if request.param == "memory":
        made: Backend = MemoryBackend()
    else:
        made = RedisBackend(request.getfixturevalue("redis_url"))
    yield made
    await made.close()


@pytest.fixture(params=["memory", "redis"])
async def isolated_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Brokers on a bus nobody else uses, which the test may cut and restore."""
    if request.param == "memory":
        made: Backend = MemoryBackend()
    else:
        server = request.getfixturevalue("private_redis")
        made = RedisBackend(server.url, server)
    yield made
    await made.close()
