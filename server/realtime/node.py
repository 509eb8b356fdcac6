"""The node: the real-time API the rest of the app holds (Centrifuge's Node).

It owns the hub (this node's sockets) and the broker (the other nodes), and is the
broker's handler and the hub's listener. What happens reaches it as an event: from this
node (``publish`` delivers locally at once, and through the broker to the others) or
from the broker. One dispatcher task handles events in order, so per conversation a
``seq`` jump shows a lost publication and the hub reads the gap from the store before
going on; the position sync (``upkeep.py``) repairs the last one, and carries delivery
while the broker is down (docs/protocol.md, "Ordering and resume").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime

import msgspec

from server import events
from server.brokers.base import CONTROL_CHANNEL, Broker, BrokerUnavailable, account_channel
from server.clock import Clock, rfc3339
from server.metrics import Metrics
from server.protocol import (
    AccountState,
    CloseCode,
    Notice,
    ReadNotice,
    Sender,
    Status,
    TypingNotice,
    encode,
)
from server.realtime.hub import Hub
from server.realtime.presence import PresenceNews
from server.realtime.reads import StreamReads
from server.realtime.staff_views import InboxUpdates
from server.realtime.upkeep import Fill, Upkeep
from server.settings import Settings

log = logging.getLogger("securechat.node")

EVENT_QUEUE = 100_000  # events waiting for the dispatcher; beyond it the sync repairs


class Node:
    def __init__(self, *, streams: StreamReads, broker: Broker, settings: Settings,
                 clock: Clock, metrics: Metrics, node_id: str) -> None:
        self.node_id = node_id
        self.broker = broker
        self.hub = Hub(streams=streams, metrics=metrics, listener=self)
        self._streams = streams
        self._clock = clock
        self._metrics = metrics
        self._queue: asyncio.Queue[events.AnyEvent | Fill] = asyncio.Queue(EVENT_QUEUE)
        self._presence = PresenceNews(self.hub, node_id, self.publish, self._to_others)
        self._inboxes = InboxUpdates(self.hub, streams)
        self.upkeep = Upkeep(hub=self.hub, streams=streams, presence=self._presence,
                             settings=settings, clock=clock, node_id=node_id,
                             publish=self.publish, enqueue=self._enqueue)
        self._tasks: list[asyncio.Task] = []
        self._broker_was_up: bool | None = None  # None until the broker first reports

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._tasks = [asyncio.create_task(loop(), name=f"node-{loop.__name__}")
                       for loop in (self._dispatch_loop, *self.upkeep.loops())]

    async def stop(self) -> None:
        self.hub.close_all(CloseCode.RESTARTING, "server restarting; reconnect")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._streams.flush()
        await self.broker.close()

    async def drain(self, timeout: float) -> None:
        """Close every socket with 1012 through its own writer (a clean close handshake)
        and wait up to ``timeout`` seconds for them to go."""
        self.hub.close_all(CloseCode.RESTARTING, "server restarting; reconnect")
        await self.hub.emptied(timeout)

    # --- publishing ------------------------------------------------------------------------

    def publish(self, event: events.AnyEvent) -> None:
        """Deliver on this node now, and to the other nodes through the broker. A broker
        failure loses nothing: the other nodes' position sync reads the store."""
        self._enqueue(event)
        channel = CONTROL_CHANNEL if isinstance(event, events.SessionEnded) else \
            account_channel(event.account_id)
        self._to_broker(channel, event)

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
        self.upkeep.delivered(message_ids)

    def _to_others(self, event: events.PresenceEvent | events.PresenceQuery) -> None:
        self._to_broker(account_channel(event.account_id), event)

    def _to_broker(self, channel: str, event: events.AnyEvent) -> None:
        try:
            self.broker.publish(channel, events.encode(event))
        except BrokerUnavailable:
            self._metrics.broker_publish_failures.inc()

    def _enqueue(self, item: events.AnyEvent | Fill) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._metrics.events_shed.inc()  # the position sync will repair it

    # --- the broker's handler and the hub's listener ---------------------------------------

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
            self.upkeep.sync_now()
            self._streams.forget_summaries()  # an opt-out change among them
            self._presence.broker_back()

    async def on_account_joined(self, account_id: str) -> None:
        await self.broker.subscribe(account_channel(account_id))
        self._presence.ask(account_id)

    async def on_account_left(self, account_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.broker.unsubscribe(account_channel(account_id))

    def on_patient_presence(self, account_id: str, conversation_id: str,
                            online: bool) -> None:
        self._presence.publish(account_id, conversation_id, online)

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
                stream = self.hub.stream(conversation_id)
                if stream is not None and upto > stream.last_seq:
                    await self.hub.fill(stream, upto)
            case events.StatusEvent():
                await self._on_status(item)
            case events.TypingEvent():
                await self._relay(item, item.sender_kind, item.sender_id, item.sender_name,
                                  lambda who: TypingNotice(conversation_id=item.conversation_id,
                                                           sender=who))
            case events.ReadEvent():
                await self._on_read(item)
            case events.PresenceEvent():
                self._presence.on_event(item)
            case events.PresenceQuery():
                self._presence.answer(item)
            case events.OptOutEvent():
                await self._on_opt_out(item)
            case events.NoticeEvent():
                self.hub.to_staff(item.account_id, encode(Notice(
                    conversation_id=item.conversation_id, notice=item.notice, at=item.at)))
            case events.AccountChanged():
                frame = encode(AccountState(portal_active=item.portal_active,
                                            clinic_name=item.clinic_name))
                self.hub.to_staff(item.account_id, frame)
                if not item.portal_active:
                    self.hub.portal_off(item.account_id, frame)
            case events.SessionEnded():
                self.hub.close_session(item.session_id, CloseCode.UNAUTHENTICATED,
                                       "session ended")

    async def _on_message(self, event: events.MessageEvent) -> None:
        stream = self.hub.stream(event.conversation_id)
        staff = self.hub.staff(event.account_id)
        if staff:
            await self._inboxes.message(event, staff)
        if stream is None or event.seq <= stream.last_seq:
            return
        if event.seq > stream.last_seq + 1:  # a publication was lost: read the gap
            await self.hub.fill(stream, event.seq - 1)
            if event.seq <= stream.last_seq:
                return
        message = await self._streams.from_event(event)
        if message is not None:
            self.hub.fan_out(stream, message)
            self._metrics.fanout_latency.observe(
                max(0.0, (self._clock.now() - _parse(event.created_at)).total_seconds()))
        stream.last_seq = event.seq

    async def _on_status(self, event: events.StatusEvent) -> None:
        """A status goes to the conversation's followers; the secure page shows Secure
        Chat only, so a patient never hears of an SMS (not even that it exists)."""
        channel = event.channel
        if channel is None and any(c.is_patient for c in self.hub.subscribers(
                event.conversation_id)):
            channel = await self._streams.message_channel(event.message_id)
        frame = encode(Status(conversation_id=event.conversation_id,
                              message_id=event.message_id, status=event.status,
                              at=event.at, error_code=event.error_code))
        for conn in self.hub.subscribers(event.conversation_id):
            if conn.may_see(channel or "sms"):
                self.hub.push(conn, frame)

    async def _on_read(self, event: events.ReadEvent) -> None:
        if event.reader_kind == "staff":
            readers = [conn for conn in self.hub.staff(event.account_id)
                       if conn.user_id == event.reader_id]
            for conn in readers:
                seen = conn.read_seen.get(event.conversation_id, 0)
                conn.read_seen[event.conversation_id] = max(seen, event.inbound_seen)
            if readers and event.last_activity_at:
                await self._inboxes.read(event, readers)
        await self._relay(event, event.reader_kind, event.reader_id, event.reader_name,
                          lambda who: ReadNotice(conversation_id=event.conversation_id,
                                                 seq=event.seq, reader=who))

    async def _on_opt_out(self, event: events.OptOutEvent) -> None:
        """The patient replied STOP (or START): every staff socket of the account here
        gets the conversation again with its new opt-out state."""
        summary = await self._streams.opt_out_changed(
            event.account_id, event.conversation_id, event.opted_out, event.opted_out_at)
        staff = self.hub.staff(event.account_id)
        if summary is not None and staff:
            self._inboxes.refresh(staff, event.conversation_id, summary, (
                event.last_seq, event.inbound_count, event.last_activity_at))

    async def _relay(self, event, kind: str, user_id: str, name: str, build) -> None:
        """Typing and read notices go to the conversation's other followers."""
        if kind == "patient":
            summary = await self._streams.summary(event.account_id, event.conversation_id)
            name = summary.display_name if summary is not None else ""
        frame = encode(build(Sender(kind, user_id, name)))
        for conn in self.hub.subscribers(event.conversation_id):
            if conn.user_id != user_id:
                self.hub.push(conn, frame)


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))
