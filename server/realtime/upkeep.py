"""A node's background upkeep: what repairs and expires on a timer, not on an event.

* Position sync: every ``sync_interval_seconds`` (and at once when the broker comes
  back) the streams' positions are compared with the store; whatever was never
  published is read as a gap (a ``Fill`` for the node's dispatcher). This repairs the
  last lost publication, and carries delivery while the broker is down.
* Session expiry: sockets' user activity is recorded, and the sockets of sessions that
  ended or passed their limits (``auth.session_over``) are closed with 4401.
* Presence: this node's patients are re-announced, silent nodes' ones expire.
* Delivered marks: batched, then published as ``delivered`` statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from server import events
from server.auth import session_over
from server.clock import Clock, rfc3339
from server.protocol import CloseCode, MessageStatus
from server.realtime.hub import Hub
from server.realtime.presence import PRESENCE_REFRESH, PresenceNews
from server.realtime.reads import StreamReads
from server.settings import Settings

log = logging.getLogger("securechat.node")

SYNC_BATCH = 500  # conversations (or sessions) per store query
DELIVERED_FLUSH = 0.05  # seconds: delivered marks are written in batches this often


@dataclass(slots=True, frozen=True)
class Fill:
    """Read a stream's messages up to ``upto`` from the store (position sync)."""

    conversation_id: str
    upto: int


class Upkeep:
    def __init__(self, *, hub: Hub, streams: StreamReads, presence: PresenceNews,
                 settings: Settings, clock: Clock, node_id: str,
                 publish: Callable[[events.AnyEvent], None],
                 enqueue: Callable[[Fill], None]) -> None:
        self._hub = hub
        self._streams = streams
        self._presence = presence
        self._settings = settings
        self._clock = clock
        self._node_id = node_id
        self._publish = publish
        self._enqueue = enqueue
        self._delivered: list[str] = []
        self._sync_now = asyncio.Event()

    def loops(self) -> list[Callable[[], Awaitable[None]]]:
        """The loops the node runs as tasks from start to stop."""
        return [self._sync_loop, self._session_loop, self._presence_loop,
                self._delivered_loop]

    def sync_now(self) -> None:
        """Compare positions with the store now (the broker came back)."""
        self._sync_now.set()

    def delivered(self, message_ids: Iterable[str]) -> None:
        self._delivered.extend(message_ids)

    async def check_sessions(self) -> None:
        seen = {c: c.last_activity for c in self._hub.connections()
                if c.last_activity is not None}
        if seen:
            await self._streams.touch_sessions(sorted({c.session_id for c in seen}))
            for conn, moment in seen.items():
                if conn.last_activity == moment:  # not if it acted again meanwhile
                    conn.last_activity = None
        ids = self._hub.sessions()
        now = self._clock.now()
        for start in range(0, len(ids), SYNC_BATCH):
            states = await self._streams.session_states(ids[start:start + SYNC_BATCH])
            for session_id in ids[start:start + SYNC_BATCH]:
                row = states.get(session_id)
                if row is None or not row["active"] or session_over(row, now, self._settings):
                    self._hub.close_session(session_id, CloseCode.UNAUTHENTICATED,
                                            "session expired; sign in again")

    async def _sync_loop(self) -> None:
        """Compare stream positions with the store; read whatever was not published."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_now.wait(),
                                       self._settings.sync_interval_seconds)
            self._sync_now.clear()
            ids = self._hub.stream_ids()
            for start in range(0, len(ids), SYNC_BATCH):
                try:
                    positions = await self._streams.positions(ids[start:start + SYNC_BATCH])
                except Exception:
                    log.warning("position sync failed", extra={"count": len(ids)})
                    break
                for conversation_id, last_seq in positions.items():
                    stream = self._hub.stream(conversation_id)
                    if stream is not None and last_seq > stream.last_seq:
                        self._enqueue(Fill(conversation_id, last_seq))

    async def _session_loop(self) -> None:
        """Record sockets' user activity and close those whose session is over."""
        while True:
            await asyncio.sleep(self._settings.ws_session_check_seconds)
            with contextlib.suppress(Exception):
                await self.check_sessions()

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH)
            self._presence.refresh()

    async def _delivered_loop(self) -> None:
        while True:
            await asyncio.sleep(DELIVERED_FLUSH)
            if not self._delivered:
                continue
            ids, self._delivered = self._delivered, []
            try:
                changed = await self._streams.mark_delivered(ids)
            except Exception:
                log.warning("delivered marks not stored", extra={"count": len(ids)})
                continue
            at = rfc3339(self._clock.now())
            for message_id, conversation_id, account_id in changed:
                self._publish(events.StatusEvent(self._node_id, account_id, conversation_id,
                                                 message_id, MessageStatus.DELIVERED, at,
                                                 channel="secure"))
