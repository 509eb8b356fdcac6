"""What only the Redis broker has: a server that stalls, its connections, its queue,
its backoff, and the bytes on the wire."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis.asyncio as aioredis

from loadtest.nodes import poll
from server.brokers.base import BrokerUnavailable
from server.brokers.redis import (
    BACKOFF_CAP,
    BACKOFF_START,
    PUBLISH_QUEUE,
    RedisBroker,
    backoff_bounds,
)
from tests.brokers.support import AWKWARD_BYTES, GatedProxy, RedisBackend, new_channel, resp

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


async def test_a_stalled_server_is_detected_and_recovered(private_backend, private_redis):
    """A SIGSTOPped Redis is reported down within idle ping + socket timeout, then up."""
    # Stopped, its sockets stay open and nothing answers: only the idle ping notices.
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


@pytest.fixture
async def proxy(redis_url: str) -> GatedProxy:
    made = GatedProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await made.start()
    yield made
    made.open()
    await made.close()


async def test_subscribe_waits_for_redis_to_confirm(proxy, shared_backend):
    """``subscribe()`` does not return before Redis has taken the SUBSCRIBE it wrote."""
    # A publication Redis handles before the SUBSCRIBE is missed by a caller that
    # trusted an early return (it reads a stream position, then misses the doorbell).
    a = await shared_backend.node()
    b = await shared_backend.node(RedisBroker(proxy.url))
    channel = new_channel()
    await a.broker.subscribe(channel)

    proxy.shut()  # what b writes from now on waits in the proxy
    subscribing = asyncio.create_task(b.broker.subscribe(channel))
    await proxy.wait_sent(resp("SUBSCRIBE", channel))
    a.broker.publish(channel, b"before redis took the subscribe")
    await a.handler.wait_for(channel)  # redis has handled it: b cannot get it any more
    assert not subscribing.done()

    proxy.open()
    async with asyncio.timeout(5):
        await subscribing
    a.broker.publish(channel, b"after subscribe returned")
    await b.handler.wait_for(channel)
    assert b.handler.received[channel] == [b"after subscribe returned"]


async def test_nothing_arrives_after_unsubscribe_returns(proxy, shared_backend):
    """What Redis still sends for a channel after ``unsubscribe()`` returned is dropped."""
    a = await shared_backend.node()
    b = await shared_backend.node(RedisBroker(proxy.url))
    channel, fence = new_channel(), new_channel()
    await b.broker.subscribe(channel)
    await b.broker.subscribe(fence)

    proxy.shut()
    await b.broker.unsubscribe(channel)
    await proxy.wait_sent(resp("UNSUBSCRIBE", channel))  # written, held: still subscribed
    a.broker.publish(channel, b"after unsubscribe returned")
    a.broker.publish(fence, b"fence")  # redis sends b both, this one second
    await b.handler.wait_for(fence)
    assert b.handler.received[channel] == []
    proxy.open()


async def test_up_is_reported_only_once_every_channel_is_resubscribed(proxy,
                                                                      shared_backend):
    """After a lost link, up is reported only once Redis confirmed every channel again."""
    # Otherwise the handler's position sync could run ahead of the subscriptions.
    a = await shared_backend.node()
    b = await shared_backend.node(RedisBroker(proxy.url))
    channel = new_channel()
    await a.broker.subscribe(channel)
    await b.broker.subscribe(channel)
    since = len(b.handler.states)

    proxy.hold_when(resp("SUBSCRIBE", channel))
    await proxy.sever()
    await b.handler.wait_for_state(False, since)
    await proxy.wait_sent(resp("SUBSCRIBE", channel))  # the reconnect resubscribes: held
    a.broker.publish(channel, b"while resubscribing")
    await a.handler.wait_for(channel)  # a redis round trip later, still not up
    assert not b.broker.up
    assert b.handler.states[since:] == [False]

    proxy.open()
    await b.handler.wait_for_state(True, since)
    a.broker.publish(channel, b"once up")
    await b.handler.wait_for(channel)
    assert b.handler.received[channel] == [b"once up"]


async def test_a_subscribe_while_reconnecting_is_not_lost(proxy, shared_backend):
    """A channel recorded while the reconnect opens its subscriber link gets subscribed."""
    a = await shared_backend.node()
    b = await shared_backend.node(RedisBroker(proxy.url))
    channel = new_channel()
    since = len(b.handler.states)

    proxy.hold_connections_after(1)  # the reconnect's ping passes, its subscriber waits
    before = proxy.accepted
    await proxy.sever()
    await b.handler.wait_for_state(False, since)
    await proxy.wait_accepted(before + 2)  # b is opening its subscriber connection
    async with asyncio.timeout(1):  # only recorded: the link is not there yet
        await b.broker.subscribe(channel)
    proxy.open()
    await b.handler.wait_for_state(True, since)
    a.broker.publish(channel, b"to the new channel")
    await b.handler.wait_for(channel)
    assert b.handler.received[channel] == [b"to the new channel"]


async def test_the_bytes_on_the_wire_are_the_bytes_given(shared_backend, redis_url):
    """What crosses Redis is exactly the payload, both ways (checked with a plain client)."""
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


async def test_a_node_holds_two_connections_whatever_the_load(private_redis):
    """After a burst one broker holds two connections: one publishing, one subscribed."""
    # Default timings: no idle ping can race the ping below for the pooled connection.
    backend = RedisBackend(private_redis.url, private_redis)
    try:
        await _burst_then_count(backend, private_redis.url)
    finally:
        await backend.close()


async def _burst_then_count(backend: RedisBackend, url: str) -> None:
    node = await backend.node()
    channel = new_channel()
    await node.broker.subscribe(channel)
    for i in range(3000):
        node.broker.publish(channel, i.to_bytes(4, "big"))
        await asyncio.sleep(0)  # a yield, as a server's publisher does (not a wait)
    await node.handler.wait_for(channel, 3000)
    await node.broker.ping()
    seen: list[int] = []

    async def two_connections() -> bool:
        raw = aioredis.Redis.from_url(url)
        try:
            seen.append(len(await raw.client_list()) - 1)  # minus the one asking
        finally:
            await raw.aclose()
        return seen[-1] == 2

    # Redis lists a connection until it has processed its close: if the link bounced on
    # a loaded machine, the old pair is closed but may still be listed for a moment. A
    # connection that stays is a leak, and fails here.
    try:
        await poll(two_connections, 10.0, "the node's Redis connections settling at two")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counts seen: {seen}") from None


async def test_a_full_queue_sheds_instead_of_waiting(shared_backend):
    """Past PUBLISH_QUEUE unsent publications ``publish`` raises BrokerUnavailable, counted."""
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
