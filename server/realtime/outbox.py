"""A bounded outbound queue per socket (STYLE rule 6; Centrifuge ``writer.go``).

Fan-out pushes without waiting: ``push`` never blocks, so one slow socket never slows
the others. When a socket falls too far behind (too many frames or bytes waiting) the
outbox overflows: it drops what it holds and the connection is closed with 4408, and
the client resumes from its last ``seq``. Only the socket's own tasks (the replay of a
``subscribe``) may wait for room, with ``wait_for_room``.

Memory: an idle socket holds one of these for its whole life, so it keeps no
``asyncio.Event`` (each carries a deque of waiters, ~760 bytes): a waiter future is made
only while someone waits, and dropped when woken.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Outbox:
    __slots__ = ("_bytes", "_frames", "_max_bytes", "_max_frames", "_ready", "_room",
                 "closed", "counter", "overflowed")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        # (encoded frame, id of a message to mark delivered once written, or None). A
        # list, swapped out whole by ``take``: an empty deque costs 760 bytes, a list 56.
        self._frames: list[tuple[str, str | None]] = []
        self._bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._ready: asyncio.Future[None] | None = None  # the writer waiting in take()
        self._room: asyncio.Future[None] | None = None  # a replay waiting for room
        self.overflowed = False
        self.closed = False
        # The node's frames-out counter (anything with ``inc(n)``), set by the hub when
        # the socket attaches: counted once per ``take``, not per frame.
        self.counter: _Counter | None = None

    @property
    def done(self) -> bool:
        """Closed or overflowed: the socket must go."""
        return self.closed or self.overflowed

    def push(self, frame: str, delivered_id: str | None = None) -> bool:
        """Queue one encoded frame; False (and overflowed) when the socket is too slow."""
        if self.closed or self.overflowed:
            return False
        if len(self._frames) >= self._max_frames or self._bytes + len(frame) > self._max_bytes:
            self.overflowed = True
            self._frames.clear()
            self._bytes = 0
            self._wake()  # the writer closes the socket; a waiting replay gives up
            return False
        self._frames.append((frame, delivered_id))
        self._bytes += len(frame)
        _resolve(self._ready)
        return True

    async def wait_for_room(self) -> None:
        """Wait until the queue is at most half full (used by replay, never by fan-out)."""
        while not self._has_room():
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    async def take(self) -> list[tuple[str, str | None]]:
        """Everything queued, waiting until there is something (or the outbox closes).
        An empty list means: stop writing (closed or overflowed)."""
        while not self._frames and not (self.closed or self.overflowed):
            if self._ready is None:
                self._ready = asyncio.get_running_loop().create_future()
            ready = self._ready
            try:
                await ready
            finally:
                if self._ready is ready:
                    self._ready = None
        if self.overflowed:
            return []
        frames, self._frames = self._frames, []
        self._bytes = 0
        if self.counter is not None and frames:
            self.counter.inc(len(frames))
        if self._room is not None:
            self._room, room = None, self._room
            _resolve(room)
        return frames

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _has_room(self) -> bool:
        return (self.closed or self.overflowed
                or (len(self._frames) * 2 < self._max_frames
                    and self._bytes * 2 < self._max_bytes))

    def _wake(self) -> None:
        _resolve(self._ready)
        self._room, room = None, self._room
        _resolve(room)

    def __len__(self) -> int:
        return len(self._frames)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
