"""Queries for the SMS outbox, secure links, opt-outs and the simulator's log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.protocol import MessageStatus
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


async def insert_outbox(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(sms_outbox.insert().values(**values))


async def insert_outbox_rows(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Many outbox rows in one statement; their ids (the send order) follow the list."""
    if rows:
        await conn.execute(_INSERT_OUTBOX, list(rows))


async def insert_links(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """New secure links; each revokes its conversation's older unverified links (only
    the newest link a patient was sent opens, so tries cannot be spread over several;
    a link the patient already verified on stays)."""
    if rows:
        await _revoke_unverified(conn, {row["conversation_id"] for row in rows},
                                 min(row["created_at"] for row in rows))
        await conn.execute(_INSERT_LINK, list(rows))


async def _revoke_unverified(conn: AsyncConnection, conversation_ids: set[str],
                             now: datetime) -> None:
    await conn.execute(
        update(secure_links).where(
            secure_links.c.conversation_id.in_(sorted(conversation_ids)),
            secure_links.c.verified_at.is_(None), secure_links.c.revoked_at.is_(None))
        .values(revoked_at=now))


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
                 provider_sid: str | None = None, error_code: str | None = None,
                 from_number: str | None = None) -> None:
    """``from_number``: the number a sent SMS left from (replies to the shared number
    are routed by it)."""
    await conn.execute(update(sms_outbox).where(sms_outbox.c.id == outbox_id).values(
        status=status, provider_sid=provider_sid, error_code=error_code,
        sent_at=now if status == "sent" else None, claimed_until=None,
        from_number=from_number))


async def retry_later(conn: AsyncConnection, outbox_id: int, at: datetime,
                      error_code: str) -> None:
    await conn.execute(update(sms_outbox).where(sms_outbox.c.id == outbox_id).values(
        status="pending", next_attempt_at=at, claimed_until=None, error_code=error_code))


async def advance_message_status(conn: AsyncConnection, message_id: str,
                                 status: MessageStatus) -> bool:
    """Move a message's status forward (never back: delivered never becomes sent).
    Returns whether it changed."""
    current = (await conn.execute(select(messages.c.status)
                                  .where(messages.c.id == message_id))).scalar_one_or_none()
    if current is None or not status.advances(current):
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


async def set_opted_out(conn: AsyncConnection, patient_id: str, opted_out: bool,
                        now: datetime) -> RowMapping | None:
    """Change the patient's opt-out; the patient's account and conversation when it
    changed, None when it already was so (a second STOP keeps the first one's date)."""
    changed = (await conn.execute(
        update(patients).where(patients.c.id == patient_id,
                               patients.c.opted_out != opted_out)
        .values(opted_out=opted_out, opted_out_at=now if opted_out else None))).rowcount
    if not changed:
        return None
    return (await conn.execute(
        select(conversations.c.id, conversations.c.account_id, conversations.c.last_seq,
               conversations.c.inbound_count, conversations.c.last_activity_at)
        .where(conversations.c.patient_id == patient_id))).mappings().first()


async def account_by_number(conn: AsyncConnection, number: str) -> RowMapping | None:
    return (await conn.execute(select(accounts).where(accounts.c.sms_number == number))
            ).mappings().first()


async def shared_number_threads(conn: AsyncConnection, shared_number: str,
                                pairs: Sequence[tuple[str, str]]) -> list[RowMapping]:
    """The conversations of the patients named by ``pairs`` of (account id, phone blind
    index) that were sent an SMS from the shared number, with their newest such send
    (``last_sent_at``, ``last_id``). A sent row's null ``from_number`` predates its
    recording (migration 0004) and was sent from the shared number."""
    if not pairs:
        return []
    from_shared = (sms_outbox.c.from_number == shared_number) | sms_outbox.c.from_number.is_(None)
    query = (select(conversations.c.id.label("conversation_id"),
                    conversations.c.account_id, patients.c.id.label("patient_id"),
                    func.max(sms_outbox.c.sent_at).label("last_sent_at"),
                    func.max(sms_outbox.c.id).label("last_id"))
             .join(conversations, conversations.c.patient_id == patients.c.id)
             .join(sms_outbox, sms_outbox.c.conversation_id == conversations.c.id)
             .where(tuple_(patients.c.account_id, patients.c.phone_index).in_(list(pairs)),
                    sms_outbox.c.status == "sent", from_shared)
             .group_by(conversations.c.id, conversations.c.account_id, patients.c.id))
    return list((await conn.execute(query)).mappings().all())


async def set_notified(conn: AsyncConnection, conversation_id: str, now: datetime,
                       seq: int) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id)
                       .values(notified_at=now, notified_seq=seq))


async def read_seq(conn: AsyncConnection, conversation_id: str, reader_id: str) -> int:
    return (await conn.execute(select(read_pointers.c.seq).where(
        read_pointers.c.conversation_id == conversation_id,
        read_pointers.c.reader_id == reader_id))).scalar_one_or_none() or 0


async def insert_link(conn: AsyncConnection, **values: Any) -> None:
    """One new secure link; as with :func:`insert_links`, it revokes its conversation's
    older unverified links."""
    await _revoke_unverified(conn, {values["conversation_id"]}, values["created_at"])
    await conn.execute(secure_links.insert().values(**values))


async def insert_simulated(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(simulated_sms.insert().values(**values))


async def simulated(conn: AsyncConnection, limit: int) -> list[RowMapping]:
    return list((await conn.execute(select(simulated_sms)
                                    .order_by(simulated_sms.c.id.desc()).limit(limit))
                 ).mappings().all())


async def pending_count(conn: AsyncConnection) -> int:
    return (await conn.execute(select(func.count()).select_from(sms_outbox)
                               .where(sms_outbox.c.status.in_(_UNFINISHED)))).scalar_one()


async def outbox_rows(conn: AsyncConnection, ids: Sequence[int]) -> list[RowMapping]:
    return list((await conn.execute(select(sms_outbox).where(sms_outbox.c.id.in_(ids)))
                 ).mappings().all())
