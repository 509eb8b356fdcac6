"""A bounded outbound queue per socket (STYLE rule 6; Centrifuge ``writer.go``).

Fan-out pushes without waiting: ``push`` never blocks, so one slow socket never slows
the others. When a socket falls too far behind (too many frames or bytes waiting) the
outbox overflows: it drops what it holds and the connection is closed with 4408, and
the client resumes from its last ``seq``. Only the socket's own tasks (the replay of a
``subscribe``) may wait for room, with ``wait_for_room``.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Outbox:
    def __init__(self, max_frames: int, max_bytes: int) -> None:
        # (encoded frame, id of a message to mark delivered once written, or None)
        self._frames: deque[tuple[str, str | None]] = deque()
        self._bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.overflowed = False
        self.closed = False
        self.done = asyncio.Event()  # set once closed or overflowed: the socket must go

    def push(self, frame: str, delivered_id: str | None = None) -> bool:
        """Queue one encoded frame; False (and overflowed) when the socket is too slow."""
        if self.closed or self.overflowed:
            return False
        if len(self._frames) >= self._max_frames or self._bytes + len(frame) > self._max_bytes:
            self.overflowed = True
            self._frames.clear()
            self._bytes = 0
            self._ready.set()  # wake the writer so it can close the socket
            self.done.set()
            return False
        self._frames.append((frame, delivered_id))
        self._bytes += len(frame)
        self._ready.set()
        if len(self._frames) * 2 >= self._max_frames or self._bytes * 2 >= self._max_bytes:
            self._room.clear()
        return True

    async def wait_for_room(self) -> None:
        """Wait until the queue is at most half full (used by replay, never by fan-out)."""
        await self._room.wait()

    async def take(self) -> list[tuple[str, str | None]]:
        """Everything queued, waiting until there is something (or the outbox closes).
        An empty list means: stop writing (closed or overflowed)."""
        while not self._frames and not (self.closed or self.overflowed):
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            return []
        frames = list(self._frames)
        self._frames.clear()
        self._bytes = 0
        self._room.set()
        return frames

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._room.set()
        self.done.set()

    def __len__(self) -> int:
        return len(self._frames)
