"""Audit entries that may share one write transaction (group commit for reads of PHI).

A ``subscribe`` reads PHI (its replay), so it is audited before anything is sent; but
one write transaction per subscribe makes a reconnect storm thousands of transactions
(docs/performance.md). Here entries arriving together are appended in one transaction
through :func:`server.audit.append_many` (one head read per account), so each still
joins its account's hash chain in order; every caller returns only once its own entry
is committed.

There is no timer: the first entry starts a batch task, which takes whatever has arrived
once the loop has run everything ready; entries arriving while a transaction runs wait
for the next one. A lone entry costs one loop turn more than a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from server import audit
from server.clock import Clock
from server.store.db import Database

# Entries per transaction: bounds how long the account chains' heads stay locked.
MAX_BATCH = 256


class AuditBatcher:
    def __init__(self, db: Database, clock: Clock, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._clock = clock
        self._max_batch = max_batch
        self._waiting: list[tuple[audit.NewEntry, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # committed batches (for tests and profiles)

    async def append(self, *, stream: str, actor: audit.Actor, action: str,
                     object_type: str | None = None, object_id: str | None = None,
                     details: Mapping[str, str | int | bool | None] | None = None) -> None:
        """Append one entry (the arguments of :func:`server.audit.append`); returns once
        it is committed.

        Raises:
            Exception: the store's error; no entry of that transaction was written.
        """
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((audit.NewEntry(stream=stream, actor=actor, action=action,
                                             object_type=object_type, object_id=object_id,
                                             details=details), done))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-batch")
        # Shielded: a caller that goes away (its socket closed) leaves its entry to be
        # written; the access it records was asked for.
        await asyncio.shield(done)

    async def flush(self) -> None:
        """Wait until everything asked for is written (the node is stopping)."""
        while self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def _run(self) -> None:
        batch: list[tuple[audit.NewEntry, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                await asyncio.sleep(0)  # let the entries of this loop turn arrive
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
                try:
                    async with self._db.write() as conn:
                        await audit.append_many(conn, self._clock,
                                                [entry for entry, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    self.transactions += 1
                    _settle(batch, None)
                batch = []
        except asyncio.CancelledError:  # the node is going: nobody waits forever
            _settle(batch + self._waiting, RuntimeError("audit batch cancelled"))
            self._waiting = []
            raise
        finally:
            self._task = None


def _settle(batch: list[tuple[audit.NewEntry, asyncio.Future[None]]],
            error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
            done.exception()  # retrieved: a caller that left must not warn
