"""Queries the real-time hub needs: replay pages, positions, read and delivery state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.protocol import BEFORE_DELIVERED, MessageStatus
from server.store.db import upsert
from server.store.tables import conversations, messages, read_pointers, staff


async def messages_after(conn: AsyncConnection, conversation_id: str, after_seq: int,
                         limit: int, upto_seq: int | None = None) -> list[RowMapping]:
    """Messages with ``after_seq < seq [<= upto_seq]``, oldest first, with staff names."""
    query = (
        select(messages, staff.c.name.label("staff_name"))
        .outerjoin(staff, (messages.c.sender_kind == "staff")
                   & (staff.c.id == messages.c.sender_id))
        .where(messages.c.conversation_id == conversation_id, messages.c.seq > after_seq)
        .order_by(messages.c.seq)
        .limit(limit)
    )
    if upto_seq is not None:
        query = query.where(messages.c.seq <= upto_seq)
    return list((await conn.execute(query)).mappings().all())


async def positions(conn: AsyncConnection, conversation_ids: Sequence[str]
                    ) -> dict[str, int]:
    rows = await conn.execute(select(conversations.c.id, conversations.c.last_seq)
                              .where(conversations.c.id.in_(conversation_ids)))
    return {row.id: row.last_seq for row in rows}


async def read_positions(conn: AsyncConnection, reader_id: str) -> dict[str, int]:
    """A reader's ``inbound_seen`` per conversation (for unread counts)."""
    rows = await conn.execute(select(read_pointers.c.conversation_id,
                                     read_pointers.c.inbound_seen)
                              .where(read_pointers.c.reader_id == reader_id))
    return {row.conversation_id: row.inbound_seen for row in rows}


async def inbound_upto(conn: AsyncConnection, conversation_id: str, seq: int) -> int:
    return (await conn.execute(select(func.count()).select_from(messages).where(
        messages.c.conversation_id == conversation_id, messages.c.direction == "inbound",
        messages.c.seq <= seq))).scalar_one()


async def advance_read_pointer(conn: AsyncConnection, conversation_id: str, reader_id: str,
                               reader_kind: str, seq: int, inbound_seen: int) -> None:
    """Move the pointer forward only (a late ``read`` never un-reads)."""
    statement = upsert(conn, read_pointers).values(
        conversation_id=conversation_id, reader_id=reader_id, reader_kind=reader_kind,
        seq=seq, inbound_seen=inbound_seen)
    statement = statement.on_conflict_do_update(
        index_elements=[read_pointers.c.conversation_id, read_pointers.c.reader_id],
        set_={"seq": seq, "inbound_seen": inbound_seen},
        where=read_pointers.c.seq < seq)
    await conn.execute(statement)


async def mark_read(conn: AsyncConnection, conversation_id: str, upto_seq: int,
                    direction: str, limit: int) -> list[RowMapping]:
    """Turn the other side's secure messages up to ``upto_seq`` to ``read``; returns
    the ids changed (at most ``limit`` newest are reported)."""
    result = await conn.execute(
        update(messages)
        .where(messages.c.conversation_id == conversation_id, messages.c.seq <= upto_seq,
               messages.c.direction == direction, messages.c.channel == "secure",
               messages.c.status != MessageStatus.READ)
        .values(status=MessageStatus.READ)
        .returning(messages.c.id, messages.c.seq))
    rows = sorted(result.mappings().all(), key=lambda row: row["seq"])
    return rows[-limit:]


async def mark_delivered(conn: AsyncConnection, message_ids: Sequence[str]) -> list[Any]:
    """Secure messages still ``sent``, ``notified`` or ``not_notified`` (the patient came
    anyway) become ``delivered`` (a status never moves backwards); returns (id,
    conversation_id, account_id) of those changed."""
    result = await conn.execute(
        update(messages)
        .where(and_(messages.c.id.in_(message_ids),
                    messages.c.status.in_(sorted(BEFORE_DELIVERED))))
        .values(status=MessageStatus.DELIVERED)
        .returning(messages.c.id, messages.c.conversation_id, messages.c.account_id))
    return list(result.all())


async def conversation_position(conn: AsyncConnection, conversation_id: str
                                ) -> RowMapping | None:
    """The stream position, inbound count and last activity of one conversation."""
    return (await conn.execute(
        select(conversations.c.last_seq, conversations.c.inbound_count,
               conversations.c.last_activity_at)
        .where(conversations.c.id == conversation_id))).mappings().first()


async def message_channel(conn: AsyncConnection, message_id: str) -> str | None:
    return (await conn.execute(select(messages.c.channel)
                               .where(messages.c.id == message_id))).scalar_one_or_none()
