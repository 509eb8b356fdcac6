"""Queries for the sign-in throttle: counters of attempts per key (``login_throttle``).

A sign-in *reserves* its attempt on every key before the password is hashed, in one
atomic statement per key (INSERT ... ON CONFLICT DO UPDATE ... RETURNING, on SQLite and
PostgreSQL alike), so attempts racing each other are counted one after another and at
most ``limit`` of them are ever checked before the lock: the lock is not a value read
before the slow hash and written after it. An attempt that turns out not to need the
count (the password was right, or it was never checked) gives it back with
:func:`refund` or :func:`clear`.

The row's columns: ``failures`` is the number of attempts counted (never above the
limit: a reservation over it is rolled back by the caller); ``locked_until`` is set by
the reservation that reaches the limit, and while it lies ahead every reservation is
over the limit; ``updated_at`` is the last counted attempt, and a count whose last
attempt is older than the window starts again from nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, literal, null, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import upsert
from server.store.tables import login_throttle as t


async def reserve(conn: AsyncConnection, key: str, *, limit: int, now: datetime,
                  lock_until: datetime, stale_before: datetime
                  ) -> tuple[int, datetime | None]:
    """Count one attempt for ``key``; returns ``(attempts counted, locked_until)``.

    More than ``limit`` attempts means the key is locked and this attempt must not be
    checked; the caller then rolls its transaction back, so the refused attempt counts
    nothing. The attempt that reaches ``limit`` sets the lock (``lock_until``). A count
    whose lock ran out, or whose last attempt came before ``stale_before``, restarts at 1.
    """
    locked = and_(t.c.locked_until.is_not(None), t.c.locked_until > now)
    afresh = or_(and_(t.c.locked_until.is_not(None), t.c.locked_until <= now),
                 and_(t.c.locked_until.is_(None), t.c.updated_at <= stale_before))
    counted = case((afresh, literal(1)), else_=t.c.failures + 1)
    statement = upsert(conn, t).values(
        key=key, failures=1, locked_until=lock_until if limit <= 1 else None,
        updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[t.c.key],
        set_={"failures": counted,
              "locked_until": case((locked, t.c.locked_until),
                                   (counted >= limit, literal(lock_until, t.c.locked_until.type)),
                                   else_=null()),
              "updated_at": now},
    ).returning(t.c.failures, t.c.locked_until)
    row = (await conn.execute(statement)).one()
    return row.failures, row.locked_until


async def refund(conn: AsyncConnection, key: str, limit: int) -> None:
    """Give back one reserved attempt; a lock its reservation set is lifted with it
    (the count is below the limit again)."""
    await conn.execute(update(t).where(t.c.key == key, t.c.failures > 0).values(
        failures=t.c.failures - 1,
        locked_until=case((t.c.failures - 1 < limit, null()), else_=t.c.locked_until)))


async def clear(conn: AsyncConnection, key: str) -> None:
    """Forget the key's count and lock (a successful sign-in for this email here)."""
    await conn.execute(t.delete().where(t.c.key == key))
