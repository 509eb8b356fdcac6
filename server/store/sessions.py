"""Queries for server-side sessions and the login throttle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import upsert
from server.store.tables import accounts, login_throttle, sessions, staff


async def insert_session(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(sessions.insert().values(**values))


def _staff_session_query():
    return (
        select(sessions.c.id, sessions.c.created_at, sessions.c.last_seen_at,
               sessions.c.expires_at, sessions.c.ended_at,
               staff.c.id.label("staff_id"), staff.c.account_id, staff.c.role,
               staff.c.name, staff.c.email, staff.c.active,
               accounts.c.portal_active, accounts.c.clinic_name)
        .join(staff, staff.c.id == sessions.c.staff_id)
        .join(accounts, accounts.c.id == staff.c.account_id)
        .where(sessions.c.kind == "staff")
    )


async def staff_sessions(conn: AsyncConnection, session_ids: Sequence[str]
                         ) -> dict[str, RowMapping]:
    """Sessions joined with their staff member and account, by id (missing ids are
    absent): all a socket's handshake needs (its ``ready`` names the account's state)."""
    query = _staff_session_query().where(sessions.c.id.in_(session_ids))
    return {row["id"]: row for row in (await conn.execute(query)).mappings()}


async def patient_sessions(conn: AsyncConnection, session_ids: Sequence[str]
                           ) -> dict[str, RowMapping]:
    """Patient sessions by id (missing ids are absent)."""
    rows = await conn.execute(select(sessions).where(
        sessions.c.id.in_(session_ids), sessions.c.kind == "patient"))
    return {row["id"]: row for row in rows.mappings()}


async def session_states(conn: AsyncConnection, session_ids: list[str]) -> list[RowMapping]:
    """The rows of these sessions with whether their staff member (if any) is active."""
    query = (
        select(sessions.c.id, sessions.c.last_seen_at, sessions.c.expires_at,
               sessions.c.ended_at, func.coalesce(staff.c.active, True).label("active"))
        .outerjoin(staff, staff.c.id == sessions.c.staff_id)
        .where(sessions.c.id.in_(session_ids))
    )
    return list((await conn.execute(query)).mappings().all())


async def touch_many(conn: AsyncConnection, session_ids: list[str], now: datetime) -> None:
    await conn.execute(update(sessions).where(sessions.c.id.in_(session_ids),
                                              sessions.c.last_seen_at < now)
                       .values(last_seen_at=now))


async def touch(conn: AsyncConnection, session_id: str, now: datetime) -> None:
    await conn.execute(update(sessions).where(sessions.c.id == session_id)
                       .values(last_seen_at=now))


async def end_session(conn: AsyncConnection, session_id: str, now: datetime) -> None:
    await conn.execute(update(sessions).where(sessions.c.id == session_id,
                                              sessions.c.ended_at.is_(None))
                       .values(ended_at=now))


async def throttle(conn: AsyncConnection, key: str) -> RowMapping | None:
    return (await conn.execute(select(login_throttle).where(login_throttle.c.key == key))
            ).mappings().first()


async def record_failure(conn: AsyncConnection, key: str, now: datetime) -> int:
    """Count one more failed login for ``key``; returns the new count."""
    statement = upsert(conn, login_throttle).values(
        key=key, failures=1, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[login_throttle.c.key],
        set_={"failures": login_throttle.c.failures + 1, "updated_at": now},
    ).returning(login_throttle.c.failures)
    return (await conn.execute(statement)).scalar_one()


async def lock(conn: AsyncConnection, key: str, until: datetime) -> None:
    await conn.execute(update(login_throttle).where(login_throttle.c.key == key)
                       .values(locked_until=until))


async def clear_throttle(conn: AsyncConnection, key: str) -> None:
    await conn.execute(login_throttle.delete().where(login_throttle.c.key == key))


async def end_patient_sessions(conn: AsyncConnection, conversation_id: str, now: datetime
                               ) -> list[str]:
    """End every live patient session of a conversation; returns their ids."""
    result = await conn.execute(
        update(sessions).where(sessions.c.kind == "patient",
                               sessions.c.conversation_id == conversation_id,
                               sessions.c.ended_at.is_(None))
        .values(ended_at=now).returning(sessions.c.id))
    return list(result.scalars())
