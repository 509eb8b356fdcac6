"""Queries for accounts, staff and data keys."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import accounts, data_keys, sessions, staff

ACCOUNT_SETTINGS = ("portal_active", "clinic_name", "sms_number", "secure_link_ttl_hours",
                    "require_code")
# What the staff list shows of a member (never the password hash).
STAFF_COLUMNS = (staff.c.id, staff.c.account_id, staff.c.name, staff.c.email, staff.c.role,
                 staff.c.active, staff.c.created_at)


async def insert_account(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(accounts.insert().values(**values))


async def account(conn: AsyncConnection, account_id: str) -> RowMapping | None:
    return (await conn.execute(select(accounts).where(accounts.c.id == account_id))
            ).mappings().first()


async def account_by_name(conn: AsyncConnection, name: str) -> RowMapping | None:
    return (await conn.execute(select(accounts).where(accounts.c.name == name))
            ).mappings().first()


async def account_ids(conn: AsyncConnection) -> list[str]:
    return list((await conn.execute(select(accounts.c.id).order_by(accounts.c.id))).scalars())


async def update_account(conn: AsyncConnection, account_id: str,
                         values: Mapping[str, Any]) -> None:
    await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


async def insert_staff(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(staff.insert().values(**values))


async def staff_by_email(conn: AsyncConnection, email: str) -> RowMapping | None:
    return (await conn.execute(select(staff).where(staff.c.email == email))).mappings().first()


async def staff_member(conn: AsyncConnection, staff_id: str) -> RowMapping | None:
    return (await conn.execute(select(staff).where(staff.c.id == staff_id))).mappings().first()


async def account_staff(conn: AsyncConnection, account_id: str, limit: int
                        ) -> list[RowMapping]:
    """The account's staff members by name (at most ``limit``)."""
    return list((await conn.execute(
        select(*STAFF_COLUMNS).where(staff.c.account_id == account_id)
        .order_by(staff.c.name, staff.c.id).limit(limit))).mappings().all())


async def account_staff_member(conn: AsyncConnection, account_id: str, staff_id: str
                               ) -> RowMapping | None:
    """One member of this account (None for another account's id, as for a missing one)."""
    return (await conn.execute(select(*STAFF_COLUMNS).where(
        staff.c.id == staff_id, staff.c.account_id == account_id))).mappings().first()


async def deactivate_staff(conn: AsyncConnection, staff_id: str) -> None:
    await conn.execute(update(staff).where(staff.c.id == staff_id).values(active=False))


async def set_password_hash(conn: AsyncConnection, staff_id: str, password_hash: str) -> None:
    await conn.execute(update(staff).where(staff.c.id == staff_id)
                       .values(password_hash=password_hash))


async def end_staff_sessions(conn: AsyncConnection, staff_id: str, now: datetime
                             ) -> list[str]:
    """End the member's live sessions; returns their ids (to close their sockets)."""
    result = await conn.execute(update(sessions).where(sessions.c.staff_id == staff_id,
                                                       sessions.c.ended_at.is_(None))
                                .values(ended_at=now).returning(sessions.c.id))
    return list(result.scalars())


async def insert_data_key(conn: AsyncConnection, account_id: str, wrapped: bytes,
                          now: datetime) -> int:
    result = await conn.execute(data_keys.insert().values(
        account_id=account_id, wrapped=wrapped, created_at=now).returning(data_keys.c.id))
    return result.scalar_one()


async def newest_data_key(conn: AsyncConnection, account_id: str) -> RowMapping | None:
    return (await conn.execute(
        select(data_keys).where(data_keys.c.account_id == account_id)
        .order_by(data_keys.c.id.desc()).limit(1))).mappings().first()


async def data_key(conn: AsyncConnection, key_id: int) -> RowMapping | None:
    return (await conn.execute(select(data_keys).where(data_keys.c.id == key_id))
            ).mappings().first()
