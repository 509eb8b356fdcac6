"""Ordering and resume (docs/protocol.md, "Ordering and resume"): `subscribe` with
`after_seq` replays exactly what is missing, then goes live with no hole and no
duplicate at the seam, even while messages are being sent; a restart closes with 1012."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.settings import Settings
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic, settings_for_tests
from tests.realtime.wsclient import WSClient, connect, patient_cookie, serve, staff_cookie


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, ws_rate_per_second=1000,
                              ws_rate_burst=1000)


async def store(services: Services, clinic: Clinic, count: int, prefix: str = "h") -> None:
    """Messages stored without any socket (history to replay)."""
    sender = Sender("staff", clinic.staff_id, "Nurse")
    for i in range(count):
        await services.messaging.send(
            clinic.account_id, sender, clinic.conversation_id,
            SendRequest(f"{prefix}{i}", f"stored {i}", secure=True), SYSTEM)


def stream_of(ws: WSClient, conversation: str) -> list[int]:
    return [f["seq"] for f in ws.of_type("message") if f["conversation_id"] == conversation]


def answer_index(ws: WSClient, kind: str, **fields: Any) -> int:
    return next(i for i, f in enumerate(ws.frames)
                if f["type"] == kind and all(f.get(k) == v for k, v in fields.items()))


@pytest.mark.parametrize("after_seq", [0, 4, 10, 25])
async def test_subscribe_after_seq_replays_exactly_the_rest(server: RunningServer,
                                                            clinic: Clinic,
                                                            after_seq: int) -> None:
    """after_seq=k replays k+1..n, then `subscribed` n, then live, each once."""
    conversation = clinic.conversation_id
    await store(server.services, clinic, 10)
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as sender, \
            connect(server.url, await patient_cookie(server.services, clinic)) as ws:
        await ws.send(type="subscribe", conversation_id=conversation, after_seq=after_seq,
                      ref="s")
        assert (await ws.wait_type("subscribed", ref="s"))["last_seq"] == 10
        replayed = stream_of(ws, conversation)
        assert replayed == list(range(min(after_seq, 10) + 1, 11))
        for i in (11, 12):
            await sender.send(type="send", conversation_id=conversation, client_msg_id=f"l{i}",
                              body="live", secure=True)
        await ws.wait_type("message", seq=12)
        assert stream_of(ws, conversation) == [*replayed, 11, 12]
        seam = answer_index(ws, "subscribed", ref="s")
        assert all(f["seq"] <= 10 for f in ws.frames[:seam] if f["type"] == "message")
        assert all(f["seq"] > 10 for f in ws.frames[seam:] if f["type"] == "message")


async def test_no_hole_or_duplicate_while_sending(server: RunningServer,
                                                  clinic: Clinic) -> None:
    """Subscribing during 200 sends yields 1..200 exactly once, in order."""
    conversation = clinic.conversation_id
    total = 200
    staff = await staff_cookie(server, clinic.staff_email)
    async with connect(server.url, staff) as sender, connect(server.url, staff) as a, \
            connect(server.url, staff) as b, connect(server.url, staff) as c, \
            connect(server.url, await patient_cookie(server.services, clinic)) as p:

        async def send_all() -> None:
            for i in range(1, total + 1):
                await sender.send(type="send", conversation_id=conversation,
                                  client_msg_id=f"c{i}", body=f"message {i}", secure=True,
                                  ref=f"r{i}")
                if i % 10 == 0:  # keep a few in flight, not all 200 at once
                    await sender.wait_type("ack", ref=f"r{i - 5}")

        sending = asyncio.create_task(send_all())
        for ws, start in ((a, 1), (b, 40), (p, 90), (c, 150)):
            await sender.wait_type("ack", ref=f"r{start}", timeout=30)
            await ws.send(type="subscribe", conversation_id=conversation, after_seq=0,
                          ref="s")
        await a.wait_type("subscribed", ref="s")
        await a.send(type="subscribe", conversation_id=conversation, after_seq=0, ref="again")
        await sending
        for ws in (b, c, p):
            await ws.wait_type("message", seq=total, timeout=15)
        again_at = a.frames.index(await a.wait_type("subscribed", ref="again", timeout=15))
        await a.wait_for(lambda _: a.frames[again_at]["last_seq"] == total or any(
            f["type"] == "message" and f["seq"] == total for f in a.frames[again_at:]),
            timeout=15)
        for ws in (b, c, p):
            assert stream_of(ws, conversation) == list(range(1, total + 1))
        # `a` re-subscribed from 0 midway: its first subscription saw 1..j, the second
        # replayed 1..k (k >= j) up to its `subscribed`, then k+1..200 live.
        again = answer_index(a, "subscribed", ref="again")
        k = a.frames[again]["last_seq"]
        before = [f["seq"] for f in a.frames[:again] if f["type"] == "message"]
        after = [f["seq"] for f in a.frames[again:] if f["type"] == "message"]
        assert before[len(before) - k:] == list(range(1, k + 1))
        first = before[:len(before) - k]
        assert first == list(range(1, len(first) + 1)) and len(first) <= k
        assert after == list(range(k + 1, total + 1))


async def test_resubscribe_keeps_live_delivery(server: RunningServer, clinic: Clinic) -> None:
    """A re-subscribe replays from the new position and stays live."""
    conversation = clinic.conversation_id
    await store(server.services, clinic, 3)
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        await patient.send(type="subscribe", conversation_id=conversation, ref="one")
        assert (await patient.wait_type("subscribed", ref="one"))["last_seq"] == 3
        await patient.send(type="subscribe", conversation_id=conversation, after_seq=1,
                           ref="two")
        assert (await patient.wait_type("subscribed", ref="two"))["last_seq"] == 3
        await staff.send(type="send", conversation_id=conversation, client_msg_id="live",
                         body="live", secure=True)
        await patient.wait_type("message", seq=4)
        assert stream_of(patient, conversation) == [1, 2, 3, 2, 3, 4]


async def test_reconnect_with_last_seen_gets_exactly_the_missed(server: RunningServer,
                                                                clinic: Clinic) -> None:
    """Reconnecting with the last seq gets exactly the missed messages."""
    conversation = clinic.conversation_id
    cookie = await patient_cookie(server.services, clinic)
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff:

        async def staff_send(i: int) -> None:
            await staff.send(type="send", conversation_id=conversation, client_msg_id=f"m{i}",
                             body=f"m{i}", secure=True, ref=f"r{i}")
            await staff.wait_type("ack", ref=f"r{i}")

        async with connect(server.url, cookie) as first:
            await first.send(type="subscribe", conversation_id=conversation, ref="s")
            await first.wait_type("subscribed", ref="s")
            for i in range(1, 6):
                await staff_send(i)
            await first.wait_type("message", seq=5)
            last_seen = stream_of(first, conversation)[-1]
        for i in range(6, 11):
            await staff_send(i)
        async with connect(server.url, cookie) as second:
            await second.send(type="subscribe", conversation_id=conversation,
                              after_seq=last_seen, ref="s")
            assert (await second.wait_type("subscribed", ref="s"))["last_seq"] == 10
            assert stream_of(second, conversation) == [6, 7, 8, 9, 10]
            await staff_send(11)
            await second.wait_type("message", seq=11)
            assert stream_of(second, conversation) == [6, 7, 8, 9, 10, 11]


async def test_shutdown_closes_1012_and_resume_elsewhere(settings: Settings,
                                                         master_key: bytes,
                                                         clock: FakeClock,
                                                         services: Services) -> None:
    """Stopping a node closes sockets 1012; resuming on another gets the rest."""
    async with serve(settings, master_key, clock) as (server, uv):
        clinic = await make_clinic(server.services)
        conversation = clinic.conversation_id
        cookie = await patient_cookie(server.services, clinic)
        staff = await staff_cookie(server, clinic.staff_email)
        async with connect(server.url, staff) as s, connect(server.url, cookie) as p:
            await p.send(type="subscribe", conversation_id=conversation, ref="s")
            await p.wait_type("subscribed", ref="s")
            await s.send(type="send", conversation_id=conversation, client_msg_id="a",
                         body="before", secure=True)
            await p.wait_type("message", seq=1)
            uv.should_exit = True
            assert (await s.close_code(timeout=10))[0] == 1012
            assert (await p.close_code(timeout=10))[0] == 1012
        await store(services, clinic, 2, prefix="while-down")  # the node is gone
    async with serve(settings, master_key, clock) as (other, _), \
            connect(other.url, cookie) as p:
        await p.send(type="subscribe", conversation_id=conversation, after_seq=1, ref="s")
        assert (await p.wait_type("subscribed", ref="s"))["last_seq"] == 3
        assert stream_of(p, conversation) == [2, 3]
