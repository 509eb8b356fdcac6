"""The hub: this node's sockets, the conversation streams they follow, and fan-out.

Delivery rules (docs/protocol.md, "Ordering and resume"):

* A message reaches a node as an event, from this node (delivered locally at once) or
  from the broker. One dispatcher task handles events in order, so per conversation the
  node delivers ``seq`` n+1 only after n: a jump shows a lost publication, and the gap
  is read from the store before going on. A stream position sync every
  ``sync_interval_seconds`` (and whenever the broker comes back) repairs the last lost
  publication too, and carries delivery while the broker is down.
* Each message is decrypted and encoded once per node; every socket gets the same
  string. Fan-out never waits: sockets that cannot keep up are closed (4408).
* ``subscribe`` registers the socket before reading the store, buffers live messages
  while it replays, then drops what the replay already sent: no hole, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from server import events
from server.auth import session_over
from server.brokers.base import (
    CONTROL_CHANNEL,
    Broker,
    BrokerUnavailable,
    account_channel,
)
from server.clock import Clock, rfc3339
from server.metrics import Metrics
from server.protocol import (
    AccountState,
    CloseCode,
    ConversationUpdate,
    Message,
    Notice,
    PatientSummary,
    Presence,
    ReadNotice,
    Sender,
    Status,
    TypingNotice,
    frame_encoder,
)
from server.realtime.connection import Connection, Subscription
from server.realtime.presence import PresenceTable
from server.realtime.staff_views import StaffViews
from server.services.streams import Streams
from server.settings import Settings

log = logging.getLogger("securechat.hub")

REPLAY_PAGE = 200  # messages per store read during replay and gap fill
SYNC_BATCH = 500  # conversations per position query
PRESENCE_REFRESH = 20.0  # seconds between re-announcing this node's online patients
PRESENCE_TTL = 3 * PRESENCE_REFRESH  # a node silent this long is taken as gone
DELIVERED_FLUSH = 0.05  # seconds: delivered marks are written in batches this often
EVENT_QUEUE = 100_000  # events waiting for the dispatcher; beyond it the sync repairs


def encode(frame: msgspec.Struct) -> str:
    return frame_encoder.encode(frame).decode()


@dataclass(slots=True, eq=False)
class Stream:
    """A conversation followed by at least one socket on this node."""

    account_id: str
    last_seq: int
    subscribers: set[Connection] = field(default_factory=set)


@dataclass(slots=True, frozen=True)
class Fill:
    """Read a stream's messages up to ``upto`` from the store (position sync)."""

    conversation_id: str
    upto: int


class Hub:
    def __init__(self, *, streams: Streams, broker: Broker, settings: Settings, clock: Clock,
                 metrics: Metrics, node_id: str) -> None:
        self.streams = streams
        self.broker = broker
        self.node_id = node_id
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._by_account: dict[str, set[Connection]] = defaultdict(set)
        self._by_session: dict[str, set[Connection]] = defaultdict(set)
        self._streams: dict[str, Stream] = {}
        self._stream_lock = asyncio.Lock()
        self._queue: asyncio.Queue[events.AnyEvent | Fill] = asyncio.Queue(EVENT_QUEUE)
        self._presence = PresenceTable(PRESENCE_TTL)
        self._staff = StaffViews(streams.read_positions)
        self._delivered: list[str] = []
        self._sync_now = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._no_sockets = asyncio.Event()  # set whenever the last socket has left
        self._broker_was_up: bool | None = None  # None until the broker first reports
        metrics.ws_outbox_frames.set_function(self._queued_frames)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._tasks = [asyncio.create_task(loop(), name=f"hub-{loop.__name__}") for loop in (
            self._dispatch_loop, self._sync_loop, self._session_loop, self._presence_loop,
            self._delivered_loop)]

    async def stop(self) -> None:
        for conn in self.connections():
            conn.close(CloseCode.RESTARTING, "server restarting; reconnect")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.streams.flush()
        await self.broker.close()

    async def drain(self, timeout: float) -> None:
        """Close every socket with 1012 through its own writer (a clean close handshake)
        and wait up to ``timeout`` seconds for them to go."""
        for conn in self.connections():
            conn.close(CloseCode.RESTARTING, "server restarting; reconnect")
        if self._by_account:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_sockets.wait(), timeout)

    def connections(self) -> list[Connection]:
        return [conn for conns in self._by_account.values() for conn in conns]

    def _queued_frames(self) -> int:
        """Frames waiting in this node's outboxes (the gauge's callback, at scrape time)."""
        return sum(len(conn.outbox) for conns in self._by_account.values() for conn in conns)

    # --- sockets ---------------------------------------------------------------------------

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
            await self.broker.subscribe(account_channel(conn.account_id))
            self._ask_presence(conn.account_id)
        if not conn.is_patient:
            await self._staff.loaded(conn.user_id)
        elif self._presence.joined(conn.account_id, conn.conversation_id or ""):
            self._publish_presence(conn.account_id, conn.conversation_id or "", True)

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
                and self._presence.left(conn.conversation_id):
            self._publish_presence(conn.account_id, conn.conversation_id, False)
        if not self._by_account[conn.account_id]:
            del self._by_account[conn.account_id]
            if not self._by_account:
                self._no_sockets.set()
            with contextlib.suppress(Exception):
                await self.broker.unsubscribe(account_channel(conn.account_id))

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
            page = await self.streams.replay(conn.account_id, conversation_id, sub.last_seq,
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
            stored = (await self.streams.positions([conversation_id])).get(conversation_id, 0)
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

    def patient_online(self, conversation_id: str) -> bool:
        return self._presence.online(conversation_id, time.monotonic())

    async def _open_stream(self, account_id: str, conversation_id: str) -> Stream:
        async with self._stream_lock:
            stream = self._streams.get(conversation_id)
            if stream is None:
                # The account channel is already followed (attach), so every message
                # committed after this read reaches us as an event.
                positions = await self.streams.positions([conversation_id])
                stream = Stream(account_id, positions.get(conversation_id, 0))
                self._streams[conversation_id] = stream
            return stream

    # --- publishing ------------------------------------------------------------------------

    def publish(self, event: events.AnyEvent) -> None:
        """Deliver on this node now, and to the other nodes through the broker. A broker
        failure loses nothing: the other nodes' position sync reads the store."""
        self._enqueue(event)
        channel = CONTROL_CHANNEL if isinstance(event, events.SessionEnded) else \
            account_channel(event.account_id)
        try:
            self.broker.publish(channel, events.encode(event))
        except BrokerUnavailable:
            self._metrics.broker_publish_failures.inc()

    def notice(self, account_id: str, conversation_id: str, notice: str) -> None:
        """Tell the account's staff, on every node (e.g. ``link_locked``)."""
        self.publish(events.NoticeEvent(self.node_id, account_id, conversation_id, notice,
                                        rfc3339(self._clock.now())))

    def account_changed(self, account_id: str, portal_active: bool, clinic_name: str) -> None:
        """Tell the account's staff sockets, on every node, its new settings."""
        self.publish(events.AccountChanged(self.node_id, account_id, portal_active,
                                           clinic_name))

    def end_session(self, session_id: str) -> None:
        """Close this session's sockets on every node (logout, deactivation)."""
        self.publish(events.SessionEnded(self.node_id, session_id))

    def delivered(self, message_ids: Iterable[str]) -> None:
        """Messages a patient socket has been sent; marked ``delivered`` in a batch."""
        self._delivered.extend(message_ids)

    def _publish_presence(self, account_id: str, conversation_id: str, online: bool) -> None:
        self.publish(events.PresenceEvent(self.node_id, account_id, conversation_id, online))

    def _tell_others(self, event: events.PresenceEvent | events.PresenceQuery) -> None:
        """Publish to the other nodes only (this node's own state needs no news)."""
        try:
            self.broker.publish(account_channel(event.account_id), events.encode(event))
        except BrokerUnavailable:
            self._metrics.broker_publish_failures.inc()

    def _ask_presence(self, account_id: str) -> None:
        self._tell_others(events.PresenceQuery(self.node_id, account_id))

    def _answer_presence(self, query: events.PresenceQuery) -> None:
        for conversation_id in self._presence.local_in(query.account_id):
            self._tell_others(events.PresenceEvent(self.node_id, query.account_id,
                                                   conversation_id, True))

    # --- the broker's handler --------------------------------------------------------------

    def on_publication(self, channel: str, payload: bytes) -> None:
        try:
            event = events.decode(payload)
        except msgspec.DecodeError:
            log.warning("undecodable publication", extra={"event": channel})
            return
        if event.node != self.node_id:
            self._enqueue(event)

    def on_broker_state(self, up: bool) -> None:
        self._metrics.broker_up.set(1 if up else 0)
        if up and self._broker_was_up is False:
            self._metrics.broker_reconnects.inc()
        self._broker_was_up = up
        if up:  # publications may have been lost while it was down
            self._sync_now.set()
            self.streams.forget_summaries()  # an opt-out change among them
            for account_id, conversation_id in self._presence.local():
                self._publish_presence(account_id, conversation_id, True)
            for account_id in list(self._by_account):  # what did the others announce?
                self._ask_presence(account_id)

    def _enqueue(self, item: events.AnyEvent | Fill) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._metrics.events_shed.inc()  # the position sync will repair it

    # --- the dispatcher --------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._dispatch(item)
            except Exception:
                log.exception("dispatch failed", extra={"event": type(item).__name__})
            # Let the sockets' writers run between events. Without this a backlog (a
            # batch of delivered marks, a read turning 200 messages to `read`) is pushed
            # in one go and overflows the outboxes of sockets that keep up perfectly.
            await asyncio.sleep(0)

    async def _dispatch(self, item: events.AnyEvent | Fill) -> None:
        match item:
            case events.MessageEvent():
                await self._on_message(item)
            case Fill(conversation_id=conversation_id, upto=upto):
                stream = self._streams.get(conversation_id)
                if stream is not None and upto > stream.last_seq:
                    await self._fill(conversation_id, stream, upto)
            case events.StatusEvent():
                await self._on_status(item)
            case events.TypingEvent():
                await self._relay(item, item.sender_kind, item.sender_id, item.sender_name,
                                  lambda who: TypingNotice(conversation_id=item.conversation_id,
                                                           sender=who))
            case events.ReadEvent():
                await self._on_read(item)
            case events.PresenceEvent():
                self._on_presence(item)
            case events.PresenceQuery():
                self._answer_presence(item)
            case events.OptOutEvent():
                await self._on_opt_out(item)
            case events.NoticeEvent():
                self._to_staff(item.account_id, encode(Notice(
                    conversation_id=item.conversation_id, notice=item.notice, at=item.at)))
            case events.AccountChanged():
                frame = encode(AccountState(portal_active=item.portal_active,
                                            clinic_name=item.clinic_name))
                self._to_staff(item.account_id, frame)
                if not item.portal_active:
                    self._portal_off(item.account_id, frame)
            case events.SessionEnded():
                for conn in list(self._by_session.get(item.session_id, ())):
                    conn.close(CloseCode.UNAUTHENTICATED, "session ended")

    async def _on_message(self, event: events.MessageEvent) -> None:
        stream = self._streams.get(event.conversation_id)
        staff = [c for c in self._by_account.get(event.account_id, ()) if not c.is_patient]
        if staff:
            await self._inbox_update(event, staff)
        if stream is None or event.seq <= stream.last_seq:
            return
        if event.seq > stream.last_seq + 1:  # a publication was lost: read the gap
            await self._fill(event.conversation_id, stream, event.seq - 1)
            if event.seq <= stream.last_seq:
                return
        message = await self.streams.from_event(event)
        if message is not None:
            self._fan_out(stream, message)
            self._metrics.fanout_latency.observe(
                max(0.0, (self._clock.now() - _parse(event.created_at)).total_seconds()))
        stream.last_seq = event.seq

    async def _fill(self, conversation_id: str, stream: Stream, upto: int) -> None:
        while stream.last_seq < upto:
            page = await self.streams.replay(stream.account_id, conversation_id,
                                             stream.last_seq, REPLAY_PAGE, upto)
            if not page:
                return
            self._metrics.gap_fills.inc(len(page))
            for message in page:
                self._fan_out(stream, message)
                stream.last_seq = message.seq
                await asyncio.sleep(0)  # let the writers drain (see _dispatch_loop)

    def _fan_out(self, stream: Stream, message: Message) -> None:
        """Encode once; offer the same string to every follower."""
        frame = encode(message)
        for conn in list(stream.subscribers):
            conn.deliver(message.conversation_id, message.seq, frame, message.channel,
                         conn.delivered_id(message))
            self._drop_if_closed(conn)

    async def _inbox_update(self, event: events.MessageEvent, staff: list[Connection]) -> None:
        summary = await self.streams.summary(event.account_id, event.conversation_id)
        if summary is None:
            return
        frames: dict[int, str] = {}
        online = self.patient_online(event.conversation_id)
        for conn in staff:
            known = conn.inbox.get(event.conversation_id)
            if known is None or event.seq > known[0]:
                conn.inbox[event.conversation_id] = (event.seq, event.inbound_count,
                                                     event.created_at)
            unread = max(0, event.inbound_count - conn.read_seen.get(event.conversation_id, 0))
            if unread not in frames:
                frames[unread] = encode(ConversationUpdate(
                    id=event.conversation_id, patient=summary,
                    last_activity_at=event.created_at, last_seq=event.seq, unread=unread,
                    patient_online=online))
            self._push(conn, frames[unread])

    async def _on_status(self, event: events.StatusEvent) -> None:
        """A status goes to the conversation's followers; the secure page shows Secure
        Chat only, so a patient never hears of an SMS (not even that it exists)."""
        channel = event.channel
        if channel is None and any(c.is_patient for c in self._subscribers(
                event.conversation_id)):
            channel = await self.streams.message_channel(event.message_id)
        frame = encode(Status(conversation_id=event.conversation_id,
                              message_id=event.message_id, status=event.status,
                              at=event.at, error_code=event.error_code))
        for conn in self._subscribers(event.conversation_id):
            if conn.may_see(channel or "sms"):
                self._push(conn, frame)

    async def _on_read(self, event: events.ReadEvent) -> None:
        if event.reader_kind == "staff":
            readers = [conn for conn in self._by_account.get(event.account_id, ())
                       if conn.user_id == event.reader_id and not conn.is_patient]
            for conn in readers:
                seen = conn.read_seen.get(event.conversation_id, 0)
                conn.read_seen[event.conversation_id] = max(seen, event.inbound_seen)
            if readers and event.last_activity_at:
                await self._reader_inbox_update(event, readers)
        await self._relay(event, event.reader_kind, event.reader_id, event.reader_name,
                          lambda who: ReadNotice(conversation_id=event.conversation_id,
                                                 seq=event.seq, reader=who))

    async def _reader_inbox_update(self, event: events.ReadEvent,
                                   readers: list[Connection]) -> None:
        """After a staff member's read, their sockets' inbox shows the new unread count
        (another tab's badge clears too). The conversation is described as the newest
        of what the read saw and what this socket was last told, so it never goes back."""
        summary = await self.streams.summary(event.account_id, event.conversation_id)
        if summary is not None:
            self._refresh_inbox(readers, event.conversation_id, summary, (
                event.last_seq, event.inbound_count, event.last_activity_at))

    async def _on_opt_out(self, event: events.OptOutEvent) -> None:
        """The patient replied STOP (or START): every staff socket of the account here
        gets the conversation again with its new opt-out state."""
        summary = await self.streams.opt_out_changed(
            event.account_id, event.conversation_id, event.opted_out, event.opted_out_at)
        staff = [c for c in self._by_account.get(event.account_id, ()) if not c.is_patient]
        if summary is not None and staff:
            self._refresh_inbox(staff, event.conversation_id, summary, (
                event.last_seq, event.inbound_count, event.last_activity_at))

    def _refresh_inbox(self, conns: list[Connection], conversation_id: str,
                       summary: PatientSummary, state: tuple[int, int, str]) -> None:
        """Send ``conns`` the conversation as the newest of ``state`` and what each was
        last told, so it never goes back; one encoding per distinct frame."""
        online = self.patient_online(conversation_id)
        frames: dict[tuple[int, int, str, int], str] = {}
        for conn in conns:
            last_seq, inbound_count, at = state
            known = conn.inbox.get(conversation_id)
            if known is not None and known[0] > last_seq:
                last_seq, inbound_count, at = known
            unread = max(0, inbound_count - conn.read_seen.get(conversation_id, 0))
            key = (last_seq, inbound_count, at, unread)
            if key not in frames:
                frames[key] = encode(ConversationUpdate(
                    id=conversation_id, patient=summary, last_activity_at=at,
                    last_seq=last_seq, unread=unread, patient_online=online))
            self._push(conn, frames[key])

    async def _relay(self, event, kind: str, user_id: str, name: str, build) -> None:
        """Typing and read notices go to the conversation's other followers."""
        if kind == "patient":
            summary = await self.streams.summary(event.account_id, event.conversation_id)
            name = summary.display_name if summary is not None else ""
        frame = encode(build(Sender(kind, user_id, name)))
        for conn in self._subscribers(event.conversation_id):
            if conn.user_id != user_id:
                self._push(conn, frame)

    def _on_presence(self, event: events.PresenceEvent) -> None:
        """This node's own news goes to its staff as it is; another node's only when it
        changes what staff should see."""
        if event.node == self.node_id or self._presence.remote(
                event.node, event.account_id, event.conversation_id, event.online,
                time.monotonic()):
            self._announce_presence(event.account_id, event.conversation_id,
                                    self.patient_online(event.conversation_id))

    def _announce_presence(self, account_id: str, conversation_id: str, online: bool) -> None:
        self._to_staff(account_id, encode(Presence(conversation_id=conversation_id,
                                                   patient_online=online)))

    # --- helpers ---------------------------------------------------------------------------

    def _subscribers(self, conversation_id: str) -> list[Connection]:
        stream = self._streams.get(conversation_id)
        return [c for c in stream.subscribers if not c.subscriptions[conversation_id]
                .replaying] if stream is not None else []

    def _to_staff(self, account_id: str, frame: str) -> None:
        """The same frame to every staff socket of the account on this node."""
        for conn in list(self._by_account.get(account_id, ())):
            if not conn.is_patient:
                self._push(conn, frame)

    def _portal_off(self, account_id: str, frame: str) -> None:
        """The portal went off: the account's patient sockets are told (the same
        ``account`` frame staff get, so the page can say why) and closed; their
        sessions were ended in the store by the settings change."""
        for conn in list(self._by_account.get(account_id, ())):
            if conn.is_patient:
                conn.push(frame)
                conn.close(CloseCode.UNAUTHENTICATED, "secure messaging is not available")

    def _push(self, conn: Connection, frame: str) -> None:
        conn.push(frame)
        self._drop_if_closed(conn)

    def _drop_if_closed(self, conn: Connection) -> None:
        """A socket closed for being slow stops receiving at once (its endpoint detaches
        it fully once the socket is gone)."""
        if conn.close_code == CloseCode.TOO_SLOW:
            for conversation_id in list(conn.subscriptions):
                self.unsubscribe(conn, conversation_id)

    # --- background loops ------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """Compare stream positions with the store; read whatever was not published."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_now.wait(),
                                       self._settings.sync_interval_seconds)
            self._sync_now.clear()
            ids = list(self._streams)
            for start in range(0, len(ids), SYNC_BATCH):
                try:
                    positions = await self.streams.positions(ids[start:start + SYNC_BATCH])
                except Exception:
                    log.warning("position sync failed", extra={"count": len(ids)})
                    break
                for conversation_id, last_seq in positions.items():
                    stream = self._streams.get(conversation_id)
                    if stream is not None and last_seq > stream.last_seq:
                        self._enqueue(Fill(conversation_id, last_seq))

    async def _session_loop(self) -> None:
        """Record sockets' user activity and close those whose session is over."""
        while True:
            await asyncio.sleep(self._settings.ws_session_check_seconds)
            with contextlib.suppress(Exception):
                await self.check_sessions()

    async def check_sessions(self) -> None:
        seen = {c: c.last_activity for c in self.connections() if c.last_activity is not None}
        if seen:
            await self.streams.touch_sessions(sorted({c.session_id for c in seen}))
            for conn, moment in seen.items():
                if conn.last_activity == moment:  # not if it acted again meanwhile
                    conn.last_activity = None
        ids = list(self._by_session)
        now = self._clock.now()
        for start in range(0, len(ids), SYNC_BATCH):
            states = await self.streams.session_states(ids[start:start + SYNC_BATCH])
            for session_id in ids[start:start + SYNC_BATCH]:
                row = states.get(session_id)
                if row is None or not row["active"] or session_over(row, now, self._settings):
                    for conn in list(self._by_session.get(session_id, ())):
                        conn.close(CloseCode.UNAUTHENTICATED, "session expired; sign in again")

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH)
            for account_id, conversation_id in self._presence.local():
                # A refresh for the others (local staff were told already).
                self._tell_others(events.PresenceEvent(self.node_id, account_id,
                                                       conversation_id, True))
            for account_id, conversation_id in self._presence.expire(time.monotonic()):
                self._announce_presence(account_id, conversation_id, False)

    async def _delivered_loop(self) -> None:
        while True:
            await asyncio.sleep(DELIVERED_FLUSH)
            if not self._delivered:
                continue
            ids, self._delivered = self._delivered, []
            try:
                changed = await self.streams.mark_delivered(ids)
            except Exception:
                log.warning("delivered marks not stored", extra={"count": len(ids)})
                continue
            at = rfc3339(self._clock.now())
            for message_id, conversation_id, account_id in changed:
                self.publish(events.StatusEvent(self.node_id, account_id, conversation_id,
                                                message_id, "delivered", at,
                                                channel="secure"))


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))

