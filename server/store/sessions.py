"""Queries for server-side sessions (the sign-in throttle is in ``throttle.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import accounts, sessions, staff


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
    """Patient sessions by id (missing ids are absent), with their account's portal
    switch and clinic name."""
    rows = await conn.execute(
        select(sessions, accounts.c.portal_active, accounts.c.clinic_name)
        .join(accounts, accounts.c.id == sessions.c.account_id)
        .where(sessions.c.id.in_(session_ids), sessions.c.kind == "patient"))
    return {row["id"]: row for row in rows.mappings()}


async def end_account_patient_sessions(conn: AsyncConnection, account_id: str,
                                       now: datetime) -> list[str]:
    """End every live patient session of an account (its portal was turned off)."""
    return await _end_live_patient_sessions(conn, now, sessions.c.account_id == account_id)


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


async def end_patient_sessions(conn: AsyncConnection, conversation_id: str, now: datetime
                               ) -> list[str]:
    """End every live patient session of a conversation; returns their ids."""
    return await _end_live_patient_sessions(conn, now,
                                            sessions.c.conversation_id == conversation_id)


async def _end_live_patient_sessions(conn: AsyncConnection, now: datetime, which
                                     ) -> list[str]:
    result = await conn.execute(
        update(sessions).where(sessions.c.kind == "patient", which,
                               sessions.c.ended_at.is_(None))
        .values(ended_at=now).returning(sessions.c.id))
    return list(result.scalars())
