"""Group commit: one writer per node runs the pending units of work in shared
transactions, and answers each only after its transaction committed.

A caller submits one item and waits. The writer task takes everything pending
(up to ``max_batch``), runs the batch function on one write transaction, commits once,
calls ``on_commit`` (synchronously, in item order: the place to publish, so what is
published is committed and a conversation's messages go out in seq order), and only
then answers each caller. Items that arrive while a transaction is running wait for
the next one: under load, batches grow by themselves; when idle, an item waits one
loop turn (plus ``window_seconds``, 0 by default) before its transaction begins.

Failure semantics (STYLE rule 6: bounded, and overflow has a name and a code):

* more than ``max_pending`` items waiting → ``unavailable`` at once (never a silent
  drop, never an unbounded queue);
* the batch function answers each item itself: a refused item (its own ``AppError``)
  does not fail the others;
* ``IntegrityError`` (a concurrent writer on another node raced this batch, or a
  constraint the batch function could not foresee) rolls the batch back and runs its
  items again one per transaction, so only the offending item sees the error;
* any other database error (or the write lock not coming in time) fails every item of
  the batch with ``unavailable``: nothing of it was stored, and a resend with the same
  ``client_msg_id`` is safe. A connection found dead (PostgreSQL restarted) is retried
  once first, which is what ``pool_pre_ping`` used to buy at every checkout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import AppError, ErrorCode
from server.store.db import Database

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# Items waiting for the writer before new ones are refused. At the 10,000 sends
# a second this is under half a second of backlog: beyond that a p99 of 50 ms is lost
# anyway, and a quick ``unavailable`` (the client resends) beats a growing queue.
MAX_PENDING = 4096
# Items per transaction. Big enough that statement overhead is amortised (a batch of
# 256 sends is ~10 statements); small enough that one transaction holds SQLite's write
# lock, and PostgreSQL's row locks, for only a few milliseconds.
MAX_BATCH = 256

BatchFunction = Callable[[AsyncConnection, list[Item]],
                         Awaitable[Sequence["Result | BaseException"]]]


def unavailable() -> AppError:
    return AppError(ErrorCode.UNAVAILABLE,
                    "could not store it now; resend with the same client_msg_id")


class GroupCommit(Generic[Item, Result]):
    """The node's writer for one kind of unit of work (see the module docstring).

    ``run(conn, items)`` returns one outcome per item, in order: a result or an
    exception to raise to that item's caller. It must not commit; it may raise, which
    fails the whole batch as described above.
    """

    def __init__(self, db: Database, run: BatchFunction,
                 on_commit: Callable[[list[Item], Sequence[Result | BaseException]],
                                     None] | None = None,
                 *, max_pending: int = MAX_PENDING, max_batch: int = MAX_BATCH,
                 window_seconds: float = 0.0) -> None:
        self._db = db
        self._run = run
        self._on_commit = on_commit
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._window = window_seconds
        self._queue: deque[tuple[Item, asyncio.Future]] = deque()
        self._task: asyncio.Task | None = None
        # Counters for tests and metrics: committed transactions and the items in them.
        self.transactions = 0
        self.items = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def idle(self) -> None:
        """Return once nothing is queued or being committed (the node is stopping: a
        send either was stored or was never acknowledged)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and return its outcome once its transaction committed.

        Raises:
            AppError: ``unavailable`` when the queue is full or the store failed;
                whatever the batch function answered for this item.
            IntegrityError: the item alone violated a constraint.
        """
        if len(self._queue) >= self._max_pending:
            raise unavailable()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.append((item, future))
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        """Run batches until nothing is pending; the next submit starts a new writer."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                # Let the sends of this loop turn (and the window) join the batch.
                await asyncio.sleep(self._window)
                batch: list[tuple[Item, asyncio.Future]] = []
                while self._queue and len(batch) < self._max_batch:
                    item, future = self._queue.popleft()
                    # Skip a caller that went away before its item began (or whose
                    # event loop is gone: a writer is per loop).
                    if not future.done() and future.get_loop() is loop:
                        batch.append((item, future))
                if batch:
                    await self._commit(batch)
        except BaseException:
            # Cancelled with the loop (shutdown): nothing pending is answered otherwise.
            while self._queue:
                _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(unavailable())
            raise

    async def _commit(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        for attempt in (1, 2):
            try:
                async with self._db.write() as conn:
                    outcomes = await self._run(conn, items)
                break
            except IntegrityError as exc:
                if len(batch) == 1:
                    _fail(batch, lambda exc=exc: exc)
                    return
                for one in batch:  # find the one it was about; the others commit
                    await self._commit([one])
                return
            except (DBAPIError, OSError, TimeoutError) as exc:
                if getattr(exc, "connection_invalidated", False) and attempt == 1:
                    continue  # a dead pooled connection; the pool replaced it
                # The exception's type and the batch size only: its text may quote values.
                log.warning("group commit failed", extra={"reason": type(exc).__name__,
                                                          "items": len(batch)})
                _fail(batch, unavailable, exc)
                return
            except asyncio.CancelledError:
                _fail(batch, unavailable)
                raise
            except Exception as exc:  # a bug: every item gets it, the writer lives on
                log.exception("group commit batch failed")
                _fail(batch, lambda exc=exc: exc)
                return
        self.transactions += 1
        self.items += len(batch)
        if self._on_commit is not None:
            try:
                self._on_commit(items, outcomes)
            except Exception:  # publishing is a notification; the data is committed
                log.exception("after-commit hook failed")
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _fail(batch: list[tuple[object, asyncio.Future]], make: Callable[[], BaseException],
          cause: BaseException | None = None) -> None:
    for _, future in batch:
        if not future.done():
            error = make()
            if cause is not None and error is not cause:
                error.__cause__ = cause
            future.set_exception(error)
