"""Queries for messages and the per-conversation sequence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import conversations, messages, staff


async def next_seq(conn: AsyncConnection, account_id: str, conversation_id: str,
                   now: datetime, *, inbound: bool) -> tuple[int, int, str] | None:
    """Raise the conversation's ``last_seq`` (and ``inbound_count`` for an inbound
    message) by one and return both with the patient's id; None if no such conversation
    in this account.

    The UPDATE takes the conversation's row lock (PostgreSQL) or the database write lock
    (SQLite) until commit, so concurrent inserts get consecutive seqs, and a rolled-back
    insert gives its seq back: no gaps, also across processes.
    """
    result = await conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id,
               conversations.c.account_id == account_id)
        .values(last_seq=conversations.c.last_seq + 1, last_activity_at=now,
                inbound_count=conversations.c.inbound_count + (1 if inbound else 0))
        .returning(conversations.c.last_seq, conversations.c.inbound_count,
                   conversations.c.patient_id))
    row = result.first()
    return (row.last_seq, row.inbound_count, row.patient_id) if row is not None else None


async def insert_message(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(messages.insert().values(**values))


async def by_client_msg_id(conn: AsyncConnection, conversation_id: str, client_msg_id: str
                           ) -> RowMapping | None:
    return (await conn.execute(select(messages).where(
        messages.c.conversation_id == conversation_id,
        messages.c.client_msg_id == client_msg_id))).mappings().first()


async def page(conn: AsyncConnection, conversation_id: str, *, before_seq: int | None,
               limit: int) -> list[RowMapping]:
    """Up to ``limit`` messages before ``before_seq``, newest first, with staff names."""
    query = (
        select(messages, staff.c.name.label("staff_name"))
        .outerjoin(staff, (messages.c.sender_kind == "staff")
                   & (staff.c.id == messages.c.sender_id))
        .where(messages.c.conversation_id == conversation_id)
        .order_by(messages.c.seq.desc())
        .limit(limit)
    )
    if before_seq is not None:
        query = query.where(messages.c.seq < before_seq)
    return list((await conn.execute(query)).mappings().all())
