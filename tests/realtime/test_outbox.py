"""The per-socket outbox (server/realtime/outbox.py): bounded, never blocking a push,
waking its writer without keeping an Event per socket."""

from __future__ import annotations

import asyncio

from server.realtime.outbox import Outbox


async def test_take_waits_for_a_push_and_returns_everything_queued() -> None:
    box = Outbox(10, 1000)
    taker = asyncio.create_task(box.take())
    await asyncio.sleep(0)  # one loop turn: the task runs up to its wait (under test)
    assert not taker.done()
    assert box.push("a") and box.push("b", "m1")
    assert await taker == [("a", None), ("b", "m1")]
    assert len(box) == 0 and box._ready is None  # no waiter kept while nobody waits


async def test_close_ends_take_after_what_is_queued() -> None:
    box = Outbox(10, 1000)
    box.push("last")
    box.close()
    assert box.done and not box.push("after close")
    assert await box.take() == [("last", None)]
    assert await box.take() == []


async def test_overflow_drops_everything_and_wakes_the_writer() -> None:
    box = Outbox(2, 1000)
    box.push("1")
    box.push("2")
    assert not box.push("3")
    assert box.overflowed and box.done and len(box) == 0
    assert await box.take() == []


async def test_too_many_bytes_overflow_too() -> None:
    box = Outbox(100, 10)
    assert box.push("12345")
    assert not box.push("123456")
    assert box.overflowed


async def test_a_replay_waits_for_room_until_the_writer_takes() -> None:
    box = Outbox(4, 1000)
    await box.wait_for_room()  # empty: room at once
    box.push("1")
    box.push("2")  # half full
    waiter = asyncio.create_task(box.wait_for_room())
    await asyncio.sleep(0)  # one loop turn: the task runs up to its wait (under test)
    assert not waiter.done()
    assert await box.take() == [("1", None), ("2", None)]
    await asyncio.wait_for(waiter, 1)


async def test_closing_releases_a_waiting_replay() -> None:
    box = Outbox(2, 1000)
    box.push("1")
    waiter = asyncio.create_task(box.wait_for_room())
    await asyncio.sleep(0)  # one loop turn: the task runs up to its wait (under test)
    assert not waiter.done()
    box.close()
    await asyncio.wait_for(waiter, 1)


async def test_a_cancelled_writer_leaves_nothing_behind() -> None:
    box = Outbox(10, 1000)
    taker = asyncio.create_task(box.take())
    await asyncio.sleep(0)  # one loop turn: the task runs up to its wait (under test)
    taker.cancel()
    await asyncio.gather(taker, return_exceptions=True)
    assert box._ready is None
    assert box.push("x")
    assert await box.take() == [("x", None)]
