"""Open WebSockets per client address (``WS_MAX_PER_ADDRESS``, checklist DOS-01): over the
cap the handshake is refused with HTTP 429 ``rate_limited``; the count drops as sockets
close, so a closed one frees a place; refused handshakes count nothing."""

from __future__ import annotations

import contextlib

import websockets

from loadtest.nodes import poll
from server.address_limits import AddressLimit
from server.clock import FakeClock
from server.web.context import app_runtime
from tests.conftest import make_clinic
from tests.patient.support import run_node
from tests.realtime.wsclient import connect, staff_cookie
from tests.security.state import sqlite_only

CAP = 3
ADDRESS = "127.0.0.1"


def test_address_limit_counts_up_to_the_cap_and_back() -> None:
    """Pure: ``cap`` acquisitions per address, then refusals that count nothing; each
    release frees one place; addresses are counted apart."""
    limit = AddressLimit(2)
    assert [limit.acquire("a"), limit.acquire("a"), limit.acquire("a")] == [True, True, False]
    assert limit.open("a") == 2
    assert limit.acquire("b") and limit.open("b") == 1
    limit.release("a")
    assert limit.open("a") == 1 and limit.acquire("a") and not limit.acquire("a")
    for _ in range(2):
        limit.release("a")
    assert limit.open("a") == 0 and limit.open("b") == 1


@sqlite_only
async def test_sockets_over_the_cap_are_refused_until_one_closes(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """``CAP`` sockets open; the next handshake is 429 with a ``rate_limited`` body; once
    one socket closes (the server's count follows), the next is accepted; when all
    close the count is back to zero."""
    async with run_node(database_url, master_key, clock,
                        ws_max_per_address=CAP) as node:
        cookie = await staff_cookie(node, (await make_clinic(node.services)).staff_email)
        def count() -> int:  # the server's own count (it tells nobody when it changes)
            return app_runtime(node.app).ws_addresses.open(ADDRESS)

        async def below(n: int) -> bool:
            return count() < n

        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(connect(node.url, cookie))
                       for _ in range(CAP)]
            for ws in sockets:
                await ws.wait_type("ready")
            assert count() == CAP
            for _ in range(2):  # refusals count nothing: the second is refused alike
                try:
                    async with connect(node.url, cookie):
                        raise AssertionError("a socket over the cap was accepted")
                except websockets.InvalidStatus as exc:
                    assert exc.response.status_code == 429
                    assert b'"rate_limited"' in exc.response.body
            assert count() == CAP
            await sockets[0].aclose()
            await poll(lambda: below(CAP), 10, "the closed socket's place freed")
            async with connect(node.url, cookie) as again:
                assert (await again.wait_type("ready"))["role"] == "staff"
        await poll(lambda: below(1), 10, "every place freed")
