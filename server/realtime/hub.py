"""The hub: this node's sockets, the conversation streams they follow, and fan-out to them.

Delivery rules (docs/protocol.md, "Ordering and resume"):

* Per conversation the hub delivers ``seq`` n+1 only after n (the node hands it events
  in order); ``fill`` reads a gap from the store before going on.
* Each message is encoded once per node (the node decrypted it once); every socket
  gets the same string. Fan-out never waits: sockets that cannot keep up are closed
  (4408).
* ``subscribe`` registers the socket before reading the store, buffers live messages
  while it replays, then drops what the replay already sent: no hole, no duplicate.

The hub never talks to the broker (Centrifuge's Hub/Node split): what the other nodes
must hear of, an account's first and last socket here and a patient arriving or leaving,
it tells its listener, the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from server.metrics import Metrics
from server.protocol import CloseCode, Message, encode
from server.realtime.connection import Connection, Subscription
from server.realtime.presence import PRESENCE_TTL, PresenceTable
from server.realtime.reads import StreamReads
from server.realtime.staff_views import StaffViews

REPLAY_PAGE = 200  # messages per store read during replay and gap fill


class HubListener(Protocol):
    """What the hub tells the node about this node's sockets (calls flow hub → node
    only through this, as broker → node goes through ``BrokerHandler``)."""

    async def on_account_joined(self, account_id: str) -> None:
        """The account's first socket here attached: follow the account's channel."""

    async def on_account_left(self, account_id: str) -> None:
        """The account's last socket here left: stop following its channel."""

    def on_patient_presence(self, account_id: str, conversation_id: str,
                            online: bool) -> None:
        """A conversation's first patient socket here arrived (True) or its last one
        left (False)."""


@dataclass(slots=True, eq=False)
class Stream:
    """A conversation followed by at least one socket on this node."""

    conversation_id: str
    account_id: str
    last_seq: int
    subscribers: set[Connection] = field(default_factory=set)


class Hub:
    def __init__(self, *, streams: StreamReads, metrics: Metrics,
                 listener: HubListener) -> None:
        self._reads = streams
        self.presence = PresenceTable(PRESENCE_TTL)
        self._metrics = metrics
        self._listener = listener
        self._by_account: dict[str, set[Connection]] = defaultdict(set)
        self._by_session: dict[str, set[Connection]] = defaultdict(set)
        self._streams: dict[str, Stream] = {}
        self._stream_lock = asyncio.Lock()
        self._staff = StaffViews(streams.read_positions)
        self._no_sockets = asyncio.Event()  # set whenever the last socket has left
        metrics.ws_outbox_frames.set_function(self._queued_frames)

    # --- the registry ----------------------------------------------------------------------

    async def attach(self, conn: Connection) -> None:
        """Register a socket; its account's channel is followed while it has sockets."""
        self._no_sockets.clear()
        conn.outbox.counter = self._metrics.ws_frames_out
        first = not self._by_account[conn.account_id]
        self._by_account[conn.account_id].add(conn)
        self._by_session[conn.session_id].add(conn)
        if not conn.is_patient:  # one copy per member and per account, not per socket
            conn.read_seen, conn.inbox = self._staff.join(conn.account_id, conn.user_id)
        self._metrics.ws_connections.inc()
        if first:
            await self._listener.on_account_joined(conn.account_id)
        if not conn.is_patient:
            await self._staff.loaded(conn.user_id)
        elif self.presence.joined(conn.account_id, conn.conversation_id or ""):
            self._listener.on_patient_presence(conn.account_id, conn.conversation_id or "",
                                               True)

    async def detach(self, conn: Connection) -> None:
        if conn not in self._by_account.get(conn.account_id, ()):
            return
        self._metrics.ws_connections.dec()
        for conversation_id in list(conn.subscriptions):
            self.unsubscribe(conn, conversation_id)
        self._by_session[conn.session_id].discard(conn)
        if not self._by_session[conn.session_id]:
            del self._by_session[conn.session_id]
        self._by_account[conn.account_id].discard(conn)
        if conn.read_seen is not None:
            self._staff.leave(conn.account_id, conn.user_id)
        if conn.is_patient and conn.conversation_id is not None \
                and self.presence.left(conn.conversation_id):
            self._listener.on_patient_presence(conn.account_id, conn.conversation_id, False)
        if not self._by_account[conn.account_id]:
            del self._by_account[conn.account_id]
            if not self._by_account:
                self._no_sockets.set()
            await self._listener.on_account_left(conn.account_id)

    def connections(self) -> list[Connection]:
        return [conn for conns in self._by_account.values() for conn in conns]

    def accounts(self) -> list[str]:
        """The accounts with a socket on this node."""
        return list(self._by_account)

    def sessions(self) -> list[str]:
        """The sessions with a socket on this node."""
        return list(self._by_session)

    def staff(self, account_id: str) -> list[Connection]:
        """The account's staff sockets on this node."""
        return [c for c in self._by_account.get(account_id, ()) if not c.is_patient]

    def close_all(self, code: CloseCode, reason: str) -> None:
        for conn in self.connections():
            conn.close(code, reason)

    def close_session(self, session_id: str, code: CloseCode, reason: str) -> None:
        for conn in list(self._by_session.get(session_id, ())):
            conn.close(code, reason)

    async def emptied(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the last socket to leave."""
        if self._by_account:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_sockets.wait(), timeout)

    def patient_online(self, conversation_id: str) -> bool:
        return self.presence.online(conversation_id, time.monotonic())

    def _queued_frames(self) -> int:
        """Frames waiting in this node's outboxes (the gauge's callback, at scrape time)."""
        return sum(len(conn.outbox) for conns in self._by_account.values() for conn in conns)

    # --- streams ---------------------------------------------------------------------------

    async def subscribe(self, conn: Connection, conversation_id: str, after_seq: int) -> int:
        """Replay the stored messages after ``after_seq`` to ``conn``, then go live.
        Returns the position the replay reached (the ``subscribed`` frame's last_seq)."""
        if conversation_id in conn.subscriptions:
            # A re-subscribe restarts the replay from the new position. Leave first: were
            # this the stream's last follower, leaving drops the stream, and joining the
            # dropped one would never hear a live message again.
            self.unsubscribe(conn, conversation_id)
        stream = await self._open_stream(conn.account_id, conversation_id)
        sub = conn.subscriptions[conversation_id] = Subscription(after_seq)
        stream.subscribers.add(conn)
        while True:
            page = await self._reads.replay(conn.account_id, conversation_id, sub.last_seq,
                                            REPLAY_PAGE)
            for message in page:
                if conn.close_code is not None:
                    return sub.last_seq
                await conn.outbox.wait_for_room()
                if conn.may_see(message.channel):
                    conn.push(encode(message), conn.delivered_id(message))
                sub.last_seq = message.seq
            if len(page) < REPLAY_PAGE:
                break
        # Nothing replayed and past what this node has seen: is the client ahead of the
        # store? (The node's position never runs ahead of the store's.)
        if sub.last_seq == after_seq > stream.last_seq:
            stored = (await self._reads.positions([conversation_id])).get(conversation_id, 0)
            if after_seq > stored:  # e.g. a restored database: tell it the real position
                sub.last_seq = stored
        # No await from here on: live frames queued meanwhile follow without a seam.
        sub.replaying = False
        for seq, frame, delivered_id in sub.pending:
            if seq > sub.last_seq:
                sub.last_seq = seq
                if frame:
                    conn.push(frame, delivered_id)
        sub.pending.clear()
        return sub.last_seq

    def unsubscribe(self, conn: Connection, conversation_id: str) -> None:
        conn.subscriptions.pop(conversation_id, None)
        stream = self._streams.get(conversation_id)
        if stream is not None:
            stream.subscribers.discard(conn)
            if not stream.subscribers:
                del self._streams[conversation_id]

    def stream(self, conversation_id: str) -> Stream | None:
        return self._streams.get(conversation_id)

    def stream_ids(self) -> list[str]:
        """The conversations followed on this node."""
        return list(self._streams)

    async def _open_stream(self, account_id: str, conversation_id: str) -> Stream:
        async with self._stream_lock:
            stream = self._streams.get(conversation_id)
            if stream is None:
                # The account channel is already followed (attach), so every message
                # committed after this read reaches us as an event.
                positions = await self._reads.positions([conversation_id])
                stream = Stream(conversation_id, account_id,
                                positions.get(conversation_id, 0))
                self._streams[conversation_id] = stream
            return stream

    async def fill(self, stream: Stream, upto: int) -> None:
        """Read the stream's messages up to ``upto`` from the store and fan them out (a
        lost publication, or a position sync)."""
        while stream.last_seq < upto:
            page = await self._reads.replay(stream.account_id, stream.conversation_id,
                                            stream.last_seq, REPLAY_PAGE, upto)
            if not page:
                return
            self._metrics.gap_fills.inc(len(page))
            for message in page:
                self.fan_out(stream, message)
                stream.last_seq = message.seq
                await asyncio.sleep(0)  # let the writers drain (see Node._dispatch_loop)

    # --- fan-out ---------------------------------------------------------------------------

    def fan_out(self, stream: Stream, message: Message) -> None:
        """Encode once; offer the same string to every follower."""
        frame = encode(message)
        for conn in list(stream.subscribers):
            conn.deliver(message.conversation_id, message.seq, frame, message.channel,
                         conn.delivered_id(message))
            self._drop_if_closed(conn)

    def subscribers(self, conversation_id: str) -> list[Connection]:
        """The conversation's followers here that are live (not replaying)."""
        stream = self._streams.get(conversation_id)
        return [c for c in stream.subscribers if not c.subscriptions[conversation_id]
                .replaying] if stream is not None else []

    def to_staff(self, account_id: str, frame: str) -> None:
        """The same frame to every staff socket of the account on this node."""
        for conn in list(self._by_account.get(account_id, ())):
            if not conn.is_patient:
                self.push(conn, frame)

    def portal_off(self, account_id: str, frame: str) -> None:
        """The portal went off: the account's patient sockets are told (the same
        ``account`` frame staff get, so the page can say why) and closed; their
        sessions were ended in the store by the settings change."""
        for conn in list(self._by_account.get(account_id, ())):
            if conn.is_patient:
                conn.push(frame)
                conn.close(CloseCode.UNAUTHENTICATED, "secure messaging is not available")

    def push(self, conn: Connection, frame: str) -> None:
        conn.push(frame)
        self._drop_if_closed(conn)

    def _drop_if_closed(self, conn: Connection) -> None:
        """A socket closed for being slow stops receiving at once (its endpoint detaches
        it fully once the socket is gone)."""
        if conn.close_code == CloseCode.TOO_SLOW:
            for conversation_id in list(conn.subscriptions):
                self.unsubscribe(conn, conversation_id)
