"""Read positions and inbox state kept once per staff member / account on a node
(server/realtime/staff_views.py)."""

from __future__ import annotations

import asyncio

from server.realtime.staff_views import StaffViews


class _Positions:
    """A recording stand-in for ``Streams.read_positions``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.called = asyncio.Event()  # a read has started and waits at the gate
        self.fail = False

    async def __call__(self, user_id: str) -> dict[str, int]:
        self.calls.append(user_id)
        self.called.set()
        await self.gate.wait()
        if self.fail:
            raise OSError("store down")
        return {"c1": 3}


async def test_a_members_sockets_share_one_read_and_one_copy() -> None:
    load = _Positions()
    views = StaffViews(load)
    first = views.join("acct", "u1")
    second = views.join("acct", "u1")
    other = views.join("acct", "u2")
    assert first[0] is second[0] and first[1] is second[1] is other[1]
    waiting = [asyncio.create_task(views.loaded(user)) for user in ("u1", "u1", "u2")]
    await asyncio.wait_for(load.called.wait(), 1)
    load.gate.set()
    await asyncio.gather(*waiting)
    assert sorted(load.calls) == ["u1", "u2"]
    assert first[0] == {"c1": 3}


async def test_a_read_seen_before_the_load_is_not_lost() -> None:
    load = _Positions()
    views = StaffViews(load)
    reads, _ = views.join("acct", "u1")
    loading = asyncio.create_task(views.loaded("u1"))
    await asyncio.wait_for(load.called.wait(), 1)
    reads["c1"] = 5  # a read event while the query runs
    load.gate.set()
    await loading
    assert reads == {"c1": 5}


async def test_state_goes_with_the_last_socket_and_is_read_again() -> None:
    load = _Positions()
    load.gate.set()
    views = StaffViews(load)
    reads, inbox = views.join("acct", "u1")
    await views.loaded("u1")
    inbox["c1"] = (1, 1, "t")
    views.leave("acct", "u1")
    again, inbox_again = views.join("acct", "u1")
    await views.loaded("u1")
    assert again is not reads and inbox_again == {} and load.calls == ["u1", "u1"]


async def test_a_failed_read_fails_its_waiters_and_the_next_socket_retries() -> None:
    load = _Positions()
    load.fail = True
    views = StaffViews(load)
    views.join("acct", "u1")
    views.join("acct", "u1")
    waiting = [asyncio.create_task(views.loaded("u1")) for _ in range(2)]
    await asyncio.wait_for(load.called.wait(), 1)
    load.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
    load.fail = False
    await views.loaded("u1")
    assert len(load.calls) == 2
    views.leave("acct", "u1")
    views.leave("acct", "u1")
    assert views._reads == {} and views._inboxes == {}  # gone with the last socket
