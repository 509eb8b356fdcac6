"""The hub and node on the in-memory broker, with the store replaced by a recording
double (tests/realtime/fakes.py) and sockets by real Connections whose outbox is the
only sink: replay against live publications, gap fill, slow sockets, session expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from server.brokers.memory import MemoryBroker, MemoryBus
from server.clock import FakeClock
from server.metrics import Metrics
from server.protocol import CloseCode, Message, Sender
from server.realtime.connection import Connection
from server.realtime.hub import REPLAY_PAGE
from server.realtime.node import Node
from server.settings import from_env
from tests.realtime.fakes import MemoryStreams, connection

ACCOUNT = str(uuid.UUID(int=1))
CONVERSATION = "conversation-1"
TIMEOUT = 5.0
# Nothing on a timer unless a test asks: no position sync or session check mid-test.
SETTINGS = from_env({}, sync_interval_seconds=3600, ws_session_check_seconds=3600)


class Received:
    """What a connection's writer would have sent, decoded, in order."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.frames: list[dict] = []

    async def until(self, done: Callable[[list[dict]], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not done(self.frames):
                batch = await self.conn.outbox.take()
                assert batch, f"the outbox closed ({self.conn.close_code})"
                self.frames += [msgspec.json.decode(frame) for frame, _ in batch]

    async def until_seq(self, seq: int) -> None:
        await self.until(lambda frames: seq in self.seqs())

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "message"]


async def barrier(node: Node, staff: Received, label: str) -> None:
    """Return once the node's dispatcher has handled everything published before (it
    handles events in order, and this notice reaches the staff socket last)."""
    node.notice(ACCOUNT, CONVERSATION, label)
    await staff.until(lambda frames: any(f["type"] == "notice" and f["notice"] == label
                                         for f in frames))


@pytest.fixture
def streams(clock: FakeClock) -> MemoryStreams:
    return MemoryStreams(clock)


async def running(streams: MemoryStreams, clock: FakeClock, broker: MemoryBroker,
                  node_id: str) -> Node:
    node = Node(streams=streams, broker=broker, settings=SETTINGS, clock=clock,
                metrics=Metrics(), node_id=node_id)
    await node.start()
    return node


@pytest.fixture
async def node(streams: MemoryStreams, clock: FakeClock) -> AsyncIterator[Node]:
    node = await running(streams, clock, MemoryBroker(), "node-a")
    yield node
    await node.stop()


async def staff_socket(node: Node, user_id: str = "staff-1", session_id: str = "s-staff",
                       max_frames: int = 1000) -> Received:
    conn = connection("staff", ACCOUNT, user_id=user_id, session_id=session_id,
                      max_frames=max_frames)
    await node.hub.attach(conn)
    return Received(conn)


# --- subscribe while messages are published ----------------------------------------------

async def test_a_message_published_during_a_replay_arrives_once_and_in_order(
        node: Node, streams: MemoryStreams) -> None:
    """Message 3 is committed before the replay reads (so the replay has it) and its
    publication arrives while the replay runs; message 4 is committed after the read
    (only its publication has it). The socket gets 1..5 exactly once, in order."""
    staff = await staff_socket(node)
    first, second = (streams.commit(ACCOUNT, CONVERSATION) for _ in range(2))
    before_read, after_read = streams.hold_replay()
    subscribing = asyncio.create_task(node.hub.subscribe(staff.conn, CONVERSATION, 0))

    async with asyncio.timeout(TIMEOUT):
        await before_read.reached.wait()
    node.publish(streams.commit(ACCOUNT, CONVERSATION))  # seq 3
    await barrier(node, staff, "3 dispatched")
    sub = staff.conn.subscriptions[CONVERSATION]
    assert sub.replaying and [seq for seq, _, _ in sub.pending] == [3]
    before_read.open()

    async with asyncio.timeout(TIMEOUT):
        await after_read.reached.wait()
    node.publish(streams.commit(ACCOUNT, CONVERSATION))  # seq 4
    await barrier(node, staff, "4 dispatched")
    assert [seq for seq, _, _ in sub.pending] == [3, 4]
    after_read.open()

    async with asyncio.timeout(TIMEOUT):
        assert await subscribing == 4
    node.publish(streams.commit(ACCOUNT, CONVERSATION))  # seq 5, live
    await staff.until_seq(5)
    await barrier(node, staff, "5 dispatched")  # anything after 5 would be here by now
    assert staff.seqs() == [1, 2, 3, 4, 5]
    ids = [f["id"] for f in staff.frames if f["type"] == "message"]
    assert ids[:2] == [first.id, second.id]
    assert ids == [m.id for m in streams.messages[CONVERSATION]]
    assert not sub.replaying and sub.pending == [] and sub.last_seq == 5


async def test_a_resubscribe_restarts_the_replay_from_its_position(
        node: Node, streams: MemoryStreams) -> None:
    staff = await staff_socket(node)
    for _ in range(3):
        streams.commit(ACCOUNT, CONVERSATION)
    assert await node.hub.subscribe(staff.conn, CONVERSATION, 0) == 3
    assert await node.hub.subscribe(staff.conn, CONVERSATION, 1) == 3
    node.publish(streams.commit(ACCOUNT, CONVERSATION))
    await staff.until_seq(4)
    assert staff.seqs() == [1, 2, 3, 2, 3, 4]  # the second replay, then live once


# --- gap fill ----------------------------------------------------------------------------

async def test_a_seq_jump_reads_the_missing_messages_from_the_store(
        node: Node, streams: MemoryStreams) -> None:
    """The publications of messages 2..REPLAY_PAGE+2 are lost; when the next one arrives
    the node reads the gap from the store (two pages) and delivers all in order."""
    staff = await staff_socket(node)
    assert await node.hub.subscribe(staff.conn, CONVERSATION, 0) == 0
    node.publish(streams.commit(ACCOUNT, CONVERSATION))
    await staff.until_seq(1)
    lost = [streams.commit(ACCOUNT, CONVERSATION) for _ in range(REPLAY_PAGE + 1)]
    last = streams.commit(ACCOUNT, CONVERSATION)
    streams.replays.clear()

    node.publish(last)
    await staff.until_seq(last.seq)
    assert staff.seqs() == list(range(1, last.seq + 1))
    assert streams.replays == [(CONVERSATION, 1, lost[-1].seq),
                               (CONVERSATION, 1 + REPLAY_PAGE, lost[-1].seq)]
    assert node.hub.stream(CONVERSATION).last_seq == last.seq


async def test_a_publication_lost_while_the_broker_was_down_is_read_when_it_returns(
        streams: MemoryStreams, clock: FakeClock) -> None:
    """Two nodes share a bus and a store. The bus goes down, node A stores and publishes
    a message (its own socket has it at once); node B's socket gets it from the store
    as soon as the bus is back (position sync), with no later publication to show it."""
    bus = MemoryBus()
    a = await running(streams, clock, MemoryBroker(bus), "node-a")
    b = await running(streams, clock, MemoryBroker(bus), "node-b")
    try:
        on_a, on_b = await staff_socket(a), await staff_socket(b, session_id="s-b")
        streams.commit(ACCOUNT, CONVERSATION)
        for node, staff in ((a, on_a), (b, on_b)):
            assert await node.hub.subscribe(staff.conn, CONVERSATION, 0) == 1
        bus.set_down(True)
        a.publish(streams.commit(ACCOUNT, CONVERSATION))
        await on_a.until_seq(2)
        await barrier(b, on_b, "down")
        assert on_b.seqs() == [1]  # B did not hear of it

        bus.set_down(False)
        await on_b.until_seq(2)
        assert on_b.seqs() == [1, 2] and on_a.seqs() == [1, 2]
    finally:
        await a.stop()
        await b.stop()


# --- slow sockets ------------------------------------------------------------------------

async def test_a_socket_whose_queue_overflows_is_closed_too_slow_and_dropped(
        node: Node, streams: MemoryStreams) -> None:
    """A patient socket that takes nothing overflows its 3-frame outbox: it is closed
    with 4408 (reconnect, resume by seq) and leaves the stream at once, while a staff
    socket on the same stream gets every message."""
    staff = await staff_socket(node)
    slow = connection("patient", ACCOUNT, user_id="patient-1", session_id="s-patient",
                      max_frames=3, conversation_id=CONVERSATION)
    await node.hub.attach(slow)
    for conn in (staff.conn, slow):
        assert await node.hub.subscribe(conn, CONVERSATION, 0) == 0

    for _ in range(5):
        node.publish(streams.commit(ACCOUNT, CONVERSATION))
    await staff.until_seq(5)

    assert staff.seqs() == [1, 2, 3, 4, 5] and staff.conn.close_code is None
    assert slow.close_code is CloseCode.TOO_SLOW and CloseCode.TOO_SLOW.reconnect
    assert "too slow" in slow.close_reason
    assert slow.subscriptions == {}
    assert node.hub.subscribers(CONVERSATION) == [staff.conn]
    assert await slow.outbox.take() == []  # the writer closes without sending more
    await node.hub.detach(slow)
    assert slow not in node.hub.connections()


# --- sessions ----------------------------------------------------------------------------

async def test_a_session_check_closes_the_sockets_of_an_ended_session(
        node: Node, streams: MemoryStreams, clock: FakeClock) -> None:
    staff = await staff_socket(node)
    other = await staff_socket(node, user_id="staff-2", session_id="s-other")
    staff.conn.last_activity = clock.now()
    streams.ended.add("s-other")

    await node.upkeep.check_sessions()

    assert streams.touched == ["s-staff"] and staff.conn.last_activity is None
    assert other.conn.close_code is CloseCode.UNAUTHENTICATED
    assert staff.conn.close_code is None


async def test_end_session_closes_its_sockets_through_the_dispatcher(
        node: Node, streams: MemoryStreams) -> None:
    staff = await staff_socket(node)
    other = await staff_socket(node, user_id="staff-2", session_id="s-other")
    node.end_session("s-other")
    await barrier(node, staff, "ended")
    assert other.conn.close_code is CloseCode.UNAUTHENTICATED
    assert staff.conn.close_code is None


@pytest.mark.parametrize("status", ["sent", "notified", "not_notified"])
def test_a_secure_message_written_to_the_patient_becomes_delivered(status: str) -> None:
    """Told by SMS or not (``not_notified``: the patient replied STOP), a secure message
    written to the patient's own socket is marked delivered (docs/protocol.md)."""
    patient = connection("patient", "acct-1", user_id="p-1", session_id="s-p",
                         conversation_id="c-1")
    message = Message(conversation_id="c-1", id="m-1", seq=1, client_msg_id="x",
                      direction="outbound", channel="secure",
                      sender=Sender("staff", "staff-1", "Dr Test"), body="b",
                      created_at="2026-12-03T00:00:00Z", status=status)
    assert patient.delivered_id(message) == "m-1"
    for unchanged in ("delivered", "read"):
        assert patient.delivered_id(msgspec.structs.replace(message, status=unchanged)) is None
    staff = connection("staff", "acct-1", user_id="staff-1", session_id="s-s")
    assert staff.delivered_id(message) is None
