"""What only the Redis broker has: a server that stalls, its connections, its queue,
its backoff, and the bytes on the wire."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis.asyncio as aioredis

from server.brokers.base import BrokerUnavailable
from server.brokers.redis import BACKOFF_CAP, BACKOFF_START, PUBLISH_QUEUE, backoff_bounds
from tests.brokers.support import AWKWARD_BYTES, RedisBackend, new_channel

# Lowered so a stalled server is noticed in ~1.5 s instead of 10 s.
FAST = {"idle_ping_seconds": 0.5, "socket_timeout": 1.0}


@pytest.fixture
async def private_backend(private_redis) -> RedisBackend:
    made = RedisBackend(private_redis.url, private_redis, **FAST)
    yield made
    await made.close()


@pytest.fixture
async def shared_backend(redis_url: str) -> RedisBackend:
    made = RedisBackend(redis_url)
    yield made
    await made.close()


@pytest.mark.slow
async def test_a_stalled_server_is_detected_and_recovered(private_backend, private_redis):
    """A SIGSTOPped Redis (socket open, nothing answers) is reported down within
    idle ping + socket timeout, and up again with live subscriptions once resumed."""
    a, b = await private_backend.node(), await private_backend.node()
    channel = new_channel()
    await a.broker.subscribe(channel)
    states = [len(node.handler.states) for node in (a, b)]
    detection = FAST["idle_ping_seconds"] + FAST["socket_timeout"]

    private_redis.pause()
    for node, since in zip((a, b), states, strict=True):
        await node.handler.wait_for_state(False, since, timeout=detection + 3)
        assert not node.broker.up
        with pytest.raises(BrokerUnavailable):
            node.broker.publish(channel, b"lost")
        with pytest.raises(BrokerUnavailable):
            await node.broker.ping()

    states = [len(node.handler.states) for node in (a, b)]
    private_redis.resume()
    for node, since in zip((a, b), states, strict=True):
        await node.handler.wait_for_state(True, since, timeout=private_backend.recovery)
    b.broker.publish(channel, b"after the stall")
    await a.handler.wait_for(channel)
    assert a.handler.received[channel] == [b"after the stall"]


async def test_the_bytes_on_the_wire_are_the_bytes_given(shared_backend, redis_url):
    """What crosses Redis is exactly the payload: a plain client sees the broker's bytes
    unchanged, and the broker hands over a plain client's bytes unchanged."""
    node = await shared_backend.node()
    channel = new_channel()
    await node.broker.subscribe(channel)
    raw = aioredis.Redis.from_url(redis_url)
    pubsub = raw.pubsub()
    try:
        await pubsub.subscribe(channel)
        async with asyncio.timeout(5):
            confirmation = await pubsub.get_message(timeout=None)
        assert confirmation is not None and confirmation["type"] == "subscribe"

        node.broker.publish(channel, AWKWARD_BYTES)
        async with asyncio.timeout(5):
            seen = await pubsub.get_message(timeout=None)
        assert seen is not None and seen["type"] == "message"
        assert seen["data"] == AWKWARD_BYTES

        reversed_bytes = AWKWARD_BYTES[::-1]
        await raw.publish(channel, reversed_bytes)
        await node.handler.wait_for(channel, 2)
        assert node.handler.received[channel] == [AWKWARD_BYTES, reversed_bytes]
    finally:
        await pubsub.aclose()
        await raw.aclose()


async def test_a_node_holds_two_connections_whatever_the_load(private_backend, private_redis):
    """After a burst, one broker holds exactly two connections to Redis: one publishing,
    one subscribed."""
    node = await private_backend.node()
    channel = new_channel()
    await node.broker.subscribe(channel)
    for i in range(3000):
        node.broker.publish(channel, i.to_bytes(4, "big"))
        await asyncio.sleep(0)  # a yield, as a server's publisher does (not a wait)
    await node.handler.wait_for(channel, 3000)
    await node.broker.ping()
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        clients = await raw.client_list()
    finally:
        await raw.aclose()
    assert len(clients) - 1 == 2, clients  # minus the one asking


async def test_a_full_queue_sheds_instead_of_waiting(shared_backend):
    """``publish`` never waits: past PUBLISH_QUEUE unsent publications it raises
    BrokerUnavailable and counts the one it dropped."""
    node = await shared_backend.node()
    channel = new_channel()  # nobody listens
    for i in range(PUBLISH_QUEUE):  # no yield: the writer cannot send any of them yet
        node.broker.publish(channel, i.to_bytes(4, "big"))
    with pytest.raises(BrokerUnavailable):
        node.broker.publish(channel, b"one too many")
    assert node.broker.dropped == 1


def test_backoff_doubles_from_the_start_to_the_cap():
    """Reconnect delays are drawn below 0.1 s, 0.2 s, 0.4 s ... and never above 5 s."""
    bounds = backoff_bounds()
    first = [next(bounds) for _ in range(12)]
    assert first[:3] == [BACKOFF_START, 2 * BACKOFF_START, 4 * BACKOFF_START]
    assert all(later >= earlier for earlier, later in itertools.pairwise(first))
    assert max(first) == BACKOFF_CAP == 5.0
    assert first[-1] == BACKOFF_CAP
