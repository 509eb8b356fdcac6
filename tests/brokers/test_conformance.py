"""One contract, two backends: every test here runs on the in-memory bus and on Redis."""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
import uuid
import warnings

import pytest

from server.brokers.base import (
    CONTROL_CHANNEL,
    BrokerUnavailable,
    account_channel,
    is_channel,
)
from tests.brokers.support import AWKWARD_BYTES, WAIT, Backend, new_channel


async def test_publish_reaches_every_subscriber_with_the_exact_bytes(backend: Backend):
    """A publication reaches every subscriber (its own broker too) byte for byte, no one else."""
    a, b, outsider = await backend.node(), await backend.node(), await backend.node()
    channel, fence = new_channel(), new_channel()
    await a.broker.subscribe(channel)
    await b.broker.subscribe(channel)
    await outsider.broker.subscribe(fence)

    assert a.broker.publish(channel, AWKWARD_BYTES) is None
    a.broker.publish(fence, b"fence")  # published after, so delivered after

    await a.handler.wait_for(channel)
    await b.handler.wait_for(channel)
    await outsider.handler.wait_for(fence)
    for node in (a, b):
        assert node.handler.received[channel] == [AWKWARD_BYTES]
        assert type(node.handler.received[channel][0]) is bytes
    assert outsider.handler.received[channel] == []


async def test_subscribe_is_active_when_it_returns(backend: Backend):
    """A publication made right after ``subscribe()`` returns is delivered."""
    a, b = await backend.node(), await backend.node()
    for attempt in range(20):
        channel = new_channel()
        await b.broker.subscribe(channel)
        a.broker.publish(channel, str(attempt).encode())
        await b.handler.wait_for(channel)
        assert b.handler.received[channel] == [str(attempt).encode()]


async def test_unsubscribe_stops_delivery(backend: Backend):
    """After ``unsubscribe()`` returns, the channel's publications no longer arrive."""
    a, b = await backend.node(), await backend.node()
    channel, fence = new_channel(), new_channel()
    for node in (a, b):
        await node.broker.subscribe(channel)
    await b.broker.subscribe(fence)
    a.broker.publish(channel, b"before")
    await b.handler.wait_for(channel)

    await b.broker.unsubscribe(channel)
    a.broker.publish(channel, b"after")
    a.broker.publish(fence, b"fence")  # one publisher, one order: "after" went first

    await b.handler.wait_for(fence)
    await a.handler.wait_for(channel, 2)
    assert a.handler.received[channel] == [b"before", b"after"]  # it was published
    assert b.handler.received[channel] == [b"before"]


async def test_one_channel_keeps_the_order_of_5000_publications(backend: Backend):
    """5,000 publications from one broker arrive in the order they were published."""
    a, b = await backend.node(), await backend.node()
    channel = new_channel()
    await a.broker.subscribe(channel)
    await b.broker.subscribe(channel)
    sent = [i.to_bytes(4, "big") for i in range(5000)]
    for payload in sent:
        a.broker.publish(channel, payload)
    for node in (a, b):
        await node.handler.wait_for(channel, len(sent))
        assert node.handler.received[channel] == sent


async def test_a_burst_of_20000_publications_all_arrive(backend: Backend):
    """20,000 publications fired as fast as the loop allows raise nothing and all arrive."""
    # The trap: a connection per publication fails in redis-py 8's asyncio pool past 100
    # in flight (MaxConnectionsError); the broker pipelines them through one connection.
    a, b = await backend.node(), await backend.node()
    channel = new_channel()
    await b.broker.subscribe(channel)
    count = 20_000
    started = time.perf_counter()
    for i in range(count):
        a.broker.publish(channel, i.to_bytes(4, "big"))
        # Not a wait: a publisher on a server yields once per publication (each comes
        # from a request); one that never yields would fill the bounded queue by design.
        await asyncio.sleep(0)
    published = time.perf_counter()
    await b.handler.wait_for(channel, count, timeout=60)
    elapsed = time.perf_counter() - started
    assert b.handler.received[channel] == [i.to_bytes(4, "big") for i in range(count)]
    print(f"\n[{backend.name}] {count:,} publications: published in "
          f"{published - started:.2f} s, all delivered in {elapsed:.2f} s "
          f"= {count / elapsed:,.0f} publications/s end to end")


async def test_publish_is_synchronous(backend: Backend):
    """``publish`` is a plain function: it returns None and never hands back an awaitable."""
    a = await backend.node()
    assert not inspect.iscoroutinefunction(type(a.broker).publish)
    assert a.broker.publish(new_channel(), b"x") is None


async def test_ping_answers_when_up(backend: Backend):
    """``ping()`` returns quietly while the bus is up."""
    a = await backend.node()
    assert a.broker.up
    await a.broker.ping()


async def test_control_channel_is_followed_from_start(isolated_backend: Backend):
    """Every started broker receives the control channel without subscribing to it."""
    a, b = await isolated_backend.node(), await isolated_backend.node()
    a.broker.publish(CONTROL_CHANNEL, b"end session 1")
    for node in (a, b):
        await node.handler.wait_for(CONTROL_CHANNEL)
        assert node.handler.received[CONTROL_CHANNEL] == [b"end session 1"]


async def test_an_outage_is_reported_and_then_repaired(isolated_backend: Backend):
    """An outage is reported and refused while it lasts, then repaired with every channel."""
    # Down: every handler hears False, ``up`` is False, ``publish`` and ``ping`` raise
    # BrokerUnavailable, and ``subscribe()`` returns at once (recorded). Back: every
    # handler hears True, and old and new channels deliver again.
    a, b = await isolated_backend.node(), await isolated_backend.node()
    old, new = new_channel(), new_channel()
    await b.broker.subscribe(old)
    states = [len(node.handler.states) for node in (a, b)]

    await isolated_backend.cut()
    for node, since in zip((a, b), states, strict=True):
        await node.handler.wait_for_state(False, since)
        assert not node.broker.up
        with pytest.raises(BrokerUnavailable):
            node.broker.publish(old, b"lost")
        with pytest.raises(BrokerUnavailable):
            await node.broker.ping()
    async with asyncio.timeout(1):  # recorded for the reconnect, not waited on
        await b.broker.subscribe(new)

    states = [len(node.handler.states) for node in (a, b)]
    await isolated_backend.restore()
    for node, since in zip((a, b), states, strict=True):
        await node.handler.wait_for_state(True, since, timeout=isolated_backend.recovery)
        assert node.broker.up
        await node.broker.ping()
    a.broker.publish(old, b"old again")
    a.broker.publish(new, b"new")
    await b.handler.wait_for(old)
    await b.handler.wait_for(new)
    assert b.handler.received[old] == [b"old again"]
    assert b.handler.received[new] == [b"new"]


async def test_close_ends_every_task_without_warnings(isolated_backend: Backend):
    """``close()`` leaves no task or connection behind, whether up or reconnecting."""
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b = await isolated_backend.node(), await isolated_backend.node()
        channel = new_channel()
        await b.broker.subscribe(channel)
        a.broker.publish(channel, b"x")
        await b.handler.wait_for(channel)
        async with asyncio.timeout(WAIT):
            await a.broker.close()
        since = len(b.handler.states)
        await isolated_backend.cut()
        await b.handler.wait_for_state(False, since)
        async with asyncio.timeout(WAIT):
            await b.broker.close()
        isolated_backend.nodes.clear()
        del a, b
        gc.collect()
    assert asyncio.all_tasks() - before == set()
    assert [str(w.message) for w in caught] == []


def test_account_channel_names_the_account():
    """``account_channel`` builds the canonical name, whatever UUID spelling it is given."""
    account = uuid.uuid4()
    expected = f"sc:a:{account}"
    for spelling in (str(account), str(account).upper(), account.hex, f"{{{account}}}"):
        assert account_channel(spelling) == expected
    assert is_channel(expected)


@pytest.mark.parametrize("bad", ["", "alice", "sc:control", "../" + str(uuid.UUID(int=1)),
                                 str(uuid.UUID(int=1)) + "0", "1234"])
def test_account_channel_rejects_a_non_uuid(bad: str):
    """``account_channel`` raises ValueError for anything that is not a UUID."""
    with pytest.raises(ValueError):
        account_channel(bad)


SOME_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"


@pytest.mark.parametrize("name", [
    CONTROL_CHANNEL,
    "sc:a:",
    "sc:a:" + "-" * 36,
    "sc:a:" + "0" * 36,
    "sc:a:" + SOME_ID.upper(),
    "sc:a:" + SOME_ID + "\n",
    "xsc:a:" + SOME_ID,
    "sc:a:" + SOME_ID + "0",
    "sc:a:" + SOME_ID.replace("-", ""),
])
def test_is_channel_rejects_names_account_channel_never_builds(name: str):
    """``is_channel`` is false for every name ``account_channel`` cannot produce."""
    assert is_channel(account_channel(SOME_ID))
    assert not is_channel(name)
