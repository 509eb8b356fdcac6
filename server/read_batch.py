"""Point reads that may share one query: lookups by key arriving in the same event-loop
turn (and while a query runs) are answered by one ``WHERE key IN (...)`` read.

Used for session lookups at the WebSocket handshake: a reconnect storm is thousands of
them (docs/performance.md). Nothing is cached: every lookup is answered by a read that
began after it was asked, so an ended session is never seen as live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Keys per query: bounds the statement (SQLite allows 32,766 parameters).
MAX_BATCH = 500


class ReadBatcher(Generic[K, V]):
    def __init__(self, db: Database,
                 query: Callable[[AsyncConnection, Sequence[K]], Awaitable[dict[K, V]]],
                 max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._query = query
        self._max_batch = max_batch
        self._waiting: dict[K, asyncio.Future[V | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.queries = 0  # for tests and profiles

    async def get(self, key: K) -> V | None:
        """The row for ``key`` (None when there is none), read after this call began.

        Raises:
            Exception: the store's error, to every lookup of that query.
        """
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="read-batch")
        return await asyncio.shield(future)

    async def _run(self) -> None:
        batch: dict[K, asyncio.Future[V | None]] = {}
        try:
            while self._waiting:
                await asyncio.sleep(0)  # let the lookups of this loop turn arrive
                keys = list(self._waiting)[:self._max_batch]
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    async with self._db.read() as conn:
                        rows = await self._query(conn, keys)
                except Exception as exc:
                    _settle(batch, None, exc)
                else:
                    self.queries += 1
                    _settle(batch, rows, None)
                batch = {}
        except asyncio.CancelledError:
            _settle({**batch, **self._waiting}, None, RuntimeError("read batch cancelled"))
            self._waiting = {}
            raise
        finally:
            self._task = None


def _settle(batch: dict, rows: dict | None, error: Exception | None) -> None:
    for key, future in batch.items():
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
            future.exception()  # retrieved: a caller that left must not warn
        else:
            future.set_result(rows.get(key) if rows is not None else None)
