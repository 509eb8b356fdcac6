"""What a node knows for staff sockets, kept once per staff member and once per account
instead of once per socket.

* A staff member's read positions (``inbound_seen`` per conversation, for unread
  counts) are read from the store when their first socket on this node attaches and
  shared by all their sockets here; read events keep the one copy current. A console
  with ten tabs, or a reconnect storm of one member's sessions, costs one query.
* An account's inbox state (the newest ``(last_seq, inbound_count, last_activity_at)``
  sent per conversation) is the same for all its staff sockets: every inbox update goes
  to all of them. One dict per account, so an update never describes an older state.

Both are dropped when the last such socket leaves this node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
