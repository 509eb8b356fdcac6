"""What a node knows for staff sockets, kept once per staff member and once per account
instead of once per socket.

* A staff member's read positions (``inbound_seen`` per conversation, for unread
  counts) are read from the store when their first socket on this node attaches and
  shared by all their sockets here; read events keep the one copy current. A console
  with ten tabs, or a reconnect storm of one member's sessions, costs one query.
* An account's inbox state (the newest ``(last_seq, inbound_count, last_activity_at)``
  sent per conversation) is the same for all its staff sockets: every inbox update goes
  to all of them. One dict per account, so an update never describes an older state.

Both are dropped when the last such socket leaves this node. ``InboxUpdates`` projects
messages, reads and opt-out changes onto them as ``conversation`` frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from server import events
from server.protocol import ConversationUpdate, PatientSummary, encode
from server.realtime.connection import Connection
from server.realtime.reads import StreamReads

if TYPE_CHECKING:
    from server.realtime.hub import Hub

InboxState = dict[str, tuple[int, int, str]]


class _Shared:
    __slots__ = ("loaded", "sockets", "value")

    def __init__(self, value: dict) -> None:
        self.value = value
        self.sockets = 0
        self.loaded: asyncio.Future[None] | None = None


class StaffViews:
    def __init__(self, load_read_positions: Callable[[str], Awaitable[dict[str, int]]]
                 ) -> None:
        self._load = load_read_positions
        self._reads: dict[str, _Shared] = {}
        self._inboxes: dict[str, _Shared] = {}

    def join(self, account_id: str, user_id: str) -> tuple[dict[str, int], InboxState]:
        """The shared (read positions, inbox state) for a staff socket that attaches; the
        read positions are filled by ``loaded``. Each ``join`` is matched by one
        ``leave``."""
        inbox = self._inboxes.get(account_id)
        if inbox is None:
            inbox = self._inboxes[account_id] = _Shared({})
        inbox.sockets += 1
        reads = self._reads.get(user_id)
        if reads is None:
            reads = self._reads[user_id] = _Shared({})
        reads.sockets += 1
        return reads.value, inbox.value

    async def loaded(self, user_id: str) -> None:
        """Wait until the member's read positions are read from the store: the first of
        their sockets reads them, later ones wait for that (or read again, if it failed).

        Raises:
            Exception: the store's error, to this socket and those waiting with it.
        """
        reads = self._reads[user_id]
        waiting = reads.loaded
        if waiting is not None:
            if not waiting.done():
                await asyncio.shield(waiting)
            waiting.result()  # a failed load fails its waiters too
            return
        loaded = reads.loaded = asyncio.get_running_loop().create_future()
        try:
            positions = await self._load(user_id)
        except BaseException as exc:
            reads.loaded = None  # the next socket tries again
            loaded.set_exception(exc if isinstance(exc, Exception)
                                 else RuntimeError("read positions were not loaded"))
            loaded.exception()  # retrieved here; the waiters re-raise it
            raise
        for conversation_id, seen in positions.items():  # read events may have come first
            reads.value[conversation_id] = max(seen, reads.value.get(conversation_id, 0))
        loaded.set_result(None)

    def leave(self, account_id: str, user_id: str) -> None:
        for table, key in ((self._reads, user_id), (self._inboxes, account_id)):
            shared = table.get(key)
            if shared is not None:
                shared.sockets -= 1
                if shared.sockets <= 0:
                    del table[key]


def unread_count(conn: Connection, conversation_id: str, inbound_count: int) -> int:
    """A staff member's unread count: the conversation's inbound messages minus those
    the member has seen (the inbox's first page computes the same in SQL:
    ``store/patients.py`` ``conversation_page``)."""
    return max(0, inbound_count - conn.read_seen.get(conversation_id, 0))


class InboxUpdates:
    """Each staff socket's inbox: the conversation with its newest state and the
    member's unread count, one encoding per distinct frame."""

    def __init__(self, hub: Hub, streams: StreamReads) -> None:
        self._hub = hub
        self._streams = streams

    async def message(self, event: events.MessageEvent, staff: list[Connection]) -> None:
        summary = await self._streams.summary(event.account_id, event.conversation_id)
        if summary is None:
            return
        frames: dict[int, str] = {}
        online = self._hub.patient_online(event.conversation_id)
        for conn in staff:
            known = conn.inbox.get(event.conversation_id)
            if known is None or event.seq > known[0]:
                conn.inbox[event.conversation_id] = (event.seq, event.inbound_count,
                                                     event.created_at)
            unread = unread_count(conn, event.conversation_id, event.inbound_count)
            if unread not in frames:
                frames[unread] = encode(ConversationUpdate(
                    id=event.conversation_id, patient=summary,
                    last_activity_at=event.created_at, last_seq=event.seq, unread=unread,
                    patient_online=online))
            self._hub.push(conn, frames[unread])

    async def read(self, event: events.ReadEvent, readers: list[Connection]) -> None:
        """After a staff member's read, their sockets' inbox shows the new unread count
        (another tab's badge clears too). The conversation is described as the newest
        of what the read saw and what this socket was last told, so it never goes back."""
        summary = await self._streams.summary(event.account_id, event.conversation_id)
        if summary is not None:
            self.refresh(readers, event.conversation_id, summary, (
                event.last_seq, event.inbound_count, event.last_activity_at))

    def refresh(self, conns: list[Connection], conversation_id: str,
                summary: PatientSummary, state: tuple[int, int, str]) -> None:
        """Send ``conns`` the conversation as the newest of ``state`` and what each was
        last told, so it never goes back; one encoding per distinct frame."""
        online = self._hub.patient_online(conversation_id)
        frames: dict[tuple[int, int, str, int], str] = {}
        for conn in conns:
            last_seq, inbound_count, at = state
            known = conn.inbox.get(conversation_id)
            if known is not None and known[0] > last_seq:
                last_seq, inbound_count, at = known
            unread = unread_count(conn, conversation_id, inbound_count)
            key = (last_seq, inbound_count, at, unread)
            if key not in frames:
                frames[key] = encode(ConversationUpdate(
                    id=conversation_id, patient=summary, last_activity_at=at,
                    last_seq=last_seq, unread=unread, patient_online=online))
            self._hub.push(conn, frames[key])
