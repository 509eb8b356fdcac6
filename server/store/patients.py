"""Queries for patients, their conversations and read pointers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import conversations, patients, read_pointers


async def insert_patient(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(patients.insert().values(**values))


async def insert_conversation(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(conversations.insert().values(**values))


async def patient_by_phone_index(conn: AsyncConnection, account_id: str,
                                 phone_index: str) -> RowMapping | None:
    return (await conn.execute(select(patients).where(
        patients.c.account_id == account_id, patients.c.phone_index == phone_index))
    ).mappings().first()


async def conversation(conn: AsyncConnection, account_id: str, conversation_id: str
                       ) -> RowMapping | None:
    """The conversation with its patient's encrypted fields and opt-out state, if it is
    in this account."""
    query = (
        select(conversations, patients.c.name_enc, patients.c.phone_enc,
               patients.c.opted_out, patients.c.opted_out_at, patients.c.unknown)
        .join(patients, patients.c.id == conversations.c.patient_id)
        .where(conversations.c.id == conversation_id,
               conversations.c.account_id == account_id)
    )
    return (await conn.execute(query)).mappings().first()


async def conversation_page(conn: AsyncConnection, account_id: str, reader_id: str, *,
                            before: datetime | None, limit: int) -> list[RowMapping]:
    """Newest-first conversations with the reader's unread count (inbound after its
    read pointer)."""
    seen = (select(read_pointers.c.inbound_seen)
            .where(read_pointers.c.conversation_id == conversations.c.id,
                   read_pointers.c.reader_id == reader_id)
            .scalar_subquery())
    unread = conversations.c.inbound_count - func.coalesce(seen, 0)
    query = (
        select(conversations.c.id, conversations.c.last_seq,
               conversations.c.last_activity_at, patients.c.id.label("patient_id"),
               patients.c.name_enc, patients.c.phone_enc, patients.c.opted_out,
               patients.c.opted_out_at, patients.c.unknown, unread.label("unread"))
        .join(patients, patients.c.id == conversations.c.patient_id)
        .where(conversations.c.account_id == account_id)
        .order_by(conversations.c.last_activity_at.desc(), conversations.c.id)
        .limit(limit)
    )
    if before is not None:
        query = query.where(and_(conversations.c.last_activity_at < before))
    return list((await conn.execute(query)).mappings().all())


async def conversation_of_patient(conn: AsyncConnection, patient_id: str
                                  ) -> RowMapping | None:
    return (await conn.execute(select(conversations)
                               .where(conversations.c.patient_id == patient_id))
            ).mappings().first()
