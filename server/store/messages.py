"""Queries for messages and the per-conversation sequence."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CompoundSelect, and_, bindparam, select, text, union_all, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import padded
from server.store.tables import (
    UTCDateTime,
    accounts,
    conversations,
    messages,
    patients,
    read_pointers,
    staff,
)

# The group-commit statements, built once (only their values change per batch).
#
# Everything a batch of sends needs to know about its conversations, in one read: the
# sequence and counters, the patient's opt-out and read position (for the notification
# rule), the account's portal switch and notification settings. The conversation rows
# are locked until commit (PostgreSQL; SQLite's write lock covers it), in id order so
# two nodes' batches never deadlock.
_LOCK_CONVERSATIONS = (
    select(conversations.c.id, conversations.c.account_id, conversations.c.patient_id,
           conversations.c.last_seq, conversations.c.inbound_count,
           conversations.c.notified_at, conversations.c.notified_seq,
           patients.c.opted_out, patients.c.unknown, accounts.c.portal_active,
           accounts.c.clinic_name,
           accounts.c.secure_link_ttl_hours,
           read_pointers.c.seq.label("patient_read_seq"))
    .select_from(
        conversations
        .join(patients, patients.c.id == conversations.c.patient_id)
        .join(accounts, accounts.c.id == conversations.c.account_id)
        .outerjoin(read_pointers, and_(read_pointers.c.conversation_id == conversations.c.id,
                                       read_pointers.c.reader_id == conversations.c.patient_id)))
    .where(conversations.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(conversations.c.id)
    # FOR NO KEY UPDATE: what the UPDATE of last_seq would take, so rows that merely
    # reference the conversation (a message, an outbox row) are never waited for.
    .with_for_update(of=conversations, key_share=True)
)


# PostgreSQL: the pairs as two arrays, unnested and joined to the unique index (one SQL
# text whatever the count, a nested loop of index probes).
_EXISTING_PG = text(
    "SELECT m.conversation_id, m.client_msg_id FROM messages AS m"
    " JOIN unnest(CAST(:cids AS VARCHAR[]), CAST(:mids AS VARCHAR[])) AS k (c, i)"
    " ON m.conversation_id = k.c AND m.client_msg_id = k.i")


@functools.cache
def _existing(count: int) -> CompoundSelect:
    """SQLite: which of ``count`` (conversation_id, client_msg_id) pairs are stored, one
    probe of their unique index each, as a UNION ALL (built once per padded length).
    The IN forms scan instead: a row-value IN scans the whole index on SQLite, and two
    IN lists let PostgreSQL read every message of the batch's conversations (13 ms a
    batch after a few thousand messages)."""
    return union_all(*(
        select(messages.c.conversation_id, messages.c.client_msg_id)
        .where(messages.c.conversation_id == bindparam(f"c{i}"),
               messages.c.client_msg_id == bindparam(f"m{i}"))
        for i in range(count)))


_INSERT_MESSAGE = messages.insert()
_ADVANCE = (
    update(conversations).where(conversations.c.id == bindparam("b_id"))
    .values(last_seq=bindparam("b_last_seq"), inbound_count=bindparam("b_inbound_count"),
            last_activity_at=bindparam("b_at", type_=UTCDateTime()),
            notified_at=bindparam("b_notified_at", type_=UTCDateTime()),
            notified_seq=bindparam("b_notified_seq"))
)


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
    await conn.execute(_INSERT_MESSAGE, values)


async def lock_conversations(conn: AsyncConnection, conversation_ids: Iterable[str]
                             ) -> dict[str, dict[str, Any]]:
    """The conversations (by id) with what a batch of sends needs, locked until commit;
    missing ids are absent. The values are plain dicts the caller may update in memory
    and write back with :func:`advance_conversations`."""
    rows = await conn.execute(_LOCK_CONVERSATIONS, {"ids": padded(conversation_ids)})
    return {row["id"]: dict(row) for row in rows.mappings()}


async def existing_client_msg_ids(conn: AsyncConnection,
                                  keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (conversation_id, client_msg_id) pairs are already stored."""
    keys = set(keys)
    if not keys:
        return set()
    if conn.dialect.name == "postgresql":
        ordered = sorted(keys)
        rows = await conn.execute(_EXISTING_PG, {"cids": [c for c, _ in ordered],
                                                 "mids": [m for _, m in ordered]})
        return {(row.conversation_id, row.client_msg_id) for row in rows}
    pairs = padded(keys)
    params = {}
    for i, (conversation_id, client_msg_id) in enumerate(pairs):
        params[f"c{i}"], params[f"m{i}"] = conversation_id, client_msg_id
    rows = await conn.execute(_existing(len(pairs)), params)
    return {(row.conversation_id, row.client_msg_id) for row in rows}


async def insert_messages(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await conn.execute(_INSERT_MESSAGE, list(rows))


async def advance_conversations(conn: AsyncConnection, now: datetime,
                                states: Iterable[Mapping[str, Any]]) -> None:
    """Write back conversations read by :func:`lock_conversations` and changed in
    memory: their ``last_seq``, counters and notification state, and the activity time."""
    params = [{"b_id": s["id"], "b_last_seq": s["last_seq"],
               "b_inbound_count": s["inbound_count"], "b_at": now,
               "b_notified_at": s["notified_at"], "b_notified_seq": s["notified_seq"]}
              for s in states]
    if params:
        await conn.execute(_ADVANCE, params)


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


async def patient_sms(conn: AsyncConnection, conversation_id: str, limit: int
                      ) -> list[RowMapping]:
    """Up to ``limit`` SMS the patient sent into the conversation, newest first."""
    return list((await conn.execute(
        select(messages)
        .where(messages.c.conversation_id == conversation_id,
               messages.c.direction == "inbound", messages.c.channel == "sms")
        .order_by(messages.c.seq.desc())
        .limit(limit))).mappings().all())
