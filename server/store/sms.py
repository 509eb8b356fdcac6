"""Queries for the SMS outbox, secure links, opt-outs and the simulator's log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import (
    accounts,
    conversations,
    messages,
    patients,
    read_pointers,
    secure_links,
    simulated_sms,
    sms_outbox,
)

_INSERT_OUTBOX = sms_outbox.insert()
_INSERT_LINK = secure_links.insert()
# Outbox rows that still hold their conversation's turn.
_UNFINISHED = ("pending", "sending")
# A message status only moves forward along these ranks (callbacks come out of order).
STATUS_RANK = {"queued": 0, "accepted": 0, "scheduled": 0, "sending": 1, "sent": 2,
               "notified": 3, "delivered": 4, "read": 5, "undelivered": 4, "failed": 4,
               "canceled": 4}


async def insert_outbox(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(sms_outbox.insert().values(**values))


async def insert_outbox_rows(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Many outbox rows in one statement; their ids (the send order) follow the list."""
    if rows:
        await conn.execute(_INSERT_OUTBOX, list(rows))


async def insert_links(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_INSERT_LINK, list(rows))


async def claim(conn: AsyncConnection, now: datetime, lease_until: datetime, limit: int
                ) -> list[RowMapping]:
    """Take up to ``limit`` due rows, at most one per conversation and only its oldest
    unfinished one (so a conversation's SMS go out in order), for this worker until
    ``lease_until``. PostgreSQL skips rows another node holds (``SKIP LOCKED``); SQLite
    has one writer at a time anyway."""
    earlier = sms_outbox.alias("earlier")
    blocked = exists().where(
        earlier.c.conversation_id == sms_outbox.c.conversation_id,
        earlier.c.id < sms_outbox.c.id,
        earlier.c.status.in_(_UNFINISHED))
    due = and_(sms_outbox.c.next_attempt_at <= now,
               (sms_outbox.c.status == "pending")
               | ((sms_outbox.c.status == "sending") & (sms_outbox.c.claimed_until < now)))
    query = (select(sms_outbox.c.id).where(due, ~blocked)
             .order_by(sms_outbox.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=sms_outbox)
    ids = list((await conn.execute(query)).scalars())
    if not ids:
        return []
    result = await conn.execute(
        update(sms_outbox).where(sms_outbox.c.id.in_(ids))
        .values(status="sending", claimed_until=lease_until,
                attempts=sms_outbox.c.attempts + 1)
        .returning(*sms_outbox.c))
    return sorted(result.mappings().all(), key=lambda row: row["id"])


async def recipient(conn: AsyncConnection, patient_id: str) -> RowMapping | None:
    """The patient's encrypted phone and opt-out state, with the account's number."""
    query = (select(patients.c.id, patients.c.account_id, patients.c.phone_enc,
                    patients.c.opted_out, accounts.c.sms_number, accounts.c.clinic_name)
             .join(accounts, accounts.c.id == patients.c.account_id)
             .where(patients.c.id == patient_id))
    return (await conn.execute(query)).mappings().first()


async def finish(conn: AsyncConnection, outbox_id: int, *, status: str, now: datetime,
                 provider_sid: str | None = None, error_code: str | None = None) -> None:
    await conn.execute(update(sms_outbox).where(sms_outbox.c.id == outbox_id).values(
        status=status, provider_sid=provider_sid, error_code=error_code,
        sent_at=now if status == "sent" else None, claimed_until=None))


async def retry_later(conn: AsyncConnection, outbox_id: int, at: datetime,
                      error_code: str) -> None:
    await conn.execute(update(sms_outbox).where(sms_outbox.c.id == outbox_id).values(
        status="pending", next_attempt_at=at, claimed_until=None, error_code=error_code))


async def advance_message_status(conn: AsyncConnection, message_id: str, status: str
                                 ) -> bool:
    """Move a message's status forward (never back: delivered never becomes sent).
    Returns whether it changed."""
    current = (await conn.execute(select(messages.c.status)
                                  .where(messages.c.id == message_id))).scalar_one_or_none()
    if current is None or STATUS_RANK.get(status, -1) <= STATUS_RANK.get(current, -1):
        return False
    await conn.execute(update(messages).where(messages.c.id == message_id)
                       .values(status=status))
    return True


async def by_provider_sid(conn: AsyncConnection, sid: str) -> RowMapping | None:
    return (await conn.execute(select(sms_outbox).where(sms_outbox.c.provider_sid == sid))
            ).mappings().first()


async def is_opted_out(conn: AsyncConnection, patient_id: str) -> bool:
    return bool((await conn.execute(select(patients.c.opted_out)
                                    .where(patients.c.id == patient_id))).scalar_one())


async def set_opted_out(conn: AsyncConnection, patient_id: str, opted_out: bool) -> None:
    await conn.execute(update(patients).where(patients.c.id == patient_id)
                       .values(opted_out=opted_out))


async def account_by_number(conn: AsyncConnection, number: str) -> RowMapping | None:
    return (await conn.execute(select(accounts).where(accounts.c.sms_number == number))
            ).mappings().first()


async def notification_state(conn: AsyncConnection, conversation_id: str
                             ) -> RowMapping | None:
    return (await conn.execute(select(conversations.c.notified_at,
                                      conversations.c.notified_seq)
                               .where(conversations.c.id == conversation_id))
            ).mappings().first()


async def set_notified(conn: AsyncConnection, conversation_id: str, now: datetime,
                       seq: int) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id)
                       .values(notified_at=now, notified_seq=seq))


async def read_seq(conn: AsyncConnection, conversation_id: str, reader_id: str) -> int:
    return (await conn.execute(select(read_pointers.c.seq).where(
        read_pointers.c.conversation_id == conversation_id,
        read_pointers.c.reader_id == reader_id))).scalar_one_or_none() or 0


async def insert_link(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(secure_links.insert().values(**values))


async def insert_simulated(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(simulated_sms.insert().values(**values))


async def simulated(conn: AsyncConnection, limit: int) -> list[RowMapping]:
    return list((await conn.execute(select(simulated_sms)
                                    .order_by(simulated_sms.c.id.desc()).limit(limit))
                 ).mappings().all())


async def pending_count(conn: AsyncConnection) -> int:
    from sqlalchemy import func
    return (await conn.execute(select(func.count()).select_from(sms_outbox)
                               .where(sms_outbox.c.status.in_(_UNFINISHED)))).scalar_one()


async def outbox_rows(conn: AsyncConnection, ids: Sequence[int]) -> list[RowMapping]:
    return list((await conn.execute(select(sms_outbox).where(sms_outbox.c.id.in_(ids)))
                 ).mappings().all())
