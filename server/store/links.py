"""Queries for secure links and their one-time codes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.tables import accounts, conversations, link_codes, patients, secure_links


async def link(conn: AsyncConnection, token_hash: str, *, lock: bool = False
               ) -> RowMapping | None:
    """The link with what verification needs: the patient's encrypted date of birth,
    the conversation's failure count and the account's settings. ``lock`` holds the
    conversation's row until commit: every try on any of its links, and every new link,
    waits for it, so the per-conversation count cannot be raced."""
    query = (select(secure_links, conversations.c.patient_id, conversations.c.link_failures,
                    patients.c.dob_enc, patients.c.opted_out, accounts.c.require_code,
                    accounts.c.portal_active, accounts.c.clinic_name)
             .join(conversations, conversations.c.id == secure_links.c.conversation_id)
             .join(patients, patients.c.id == conversations.c.patient_id)
             .join(accounts, accounts.c.id == secure_links.c.account_id)
             .where(secure_links.c.token_hash == token_hash))
    if lock:
        query = query.with_for_update(of=conversations)
    return (await conn.execute(query)).mappings().first()


async def add_failure(conn: AsyncConnection, token_hash: str, conversation_id: str,
                      now: datetime, lock_after: int) -> int:
    """Count one wrong try for the conversation (and the link it was made on); the
    ``lock_after``-th locks every live link of the conversation. Returns the
    conversation's count."""
    await conn.execute(update(secure_links).where(secure_links.c.token_hash == token_hash)
                       .values(failures=secure_links.c.failures + 1))
    failures = (await conn.execute(
        update(conversations).where(conversations.c.id == conversation_id)
        .values(link_failures=conversations.c.link_failures + 1)
        .returning(conversations.c.link_failures))).scalar_one()
    if failures >= lock_after:
        await conn.execute(update(secure_links)
                           .where(secure_links.c.conversation_id == conversation_id,
                                  secure_links.c.revoked_at.is_(None),
                                  secure_links.c.locked_at.is_(None))
                           .values(locked_at=now))
    return failures


async def mark_verified(conn: AsyncConnection, token_hash: str, now: datetime) -> None:
    await conn.execute(update(secure_links).where(secure_links.c.token_hash == token_hash,
                                                  secure_links.c.verified_at.is_(None))
                       .values(verified_at=now))


async def session_ended(conn: AsyncConnection, conversation_id: str, now: datetime) -> None:
    """The patient pressed "End session": the conversation's links issued so far open
    only with the one-time code from now on."""
    await conn.execute(update(secure_links)
                       .where(secure_links.c.conversation_id == conversation_id,
                              secure_links.c.session_ended_at.is_(None))
                       .values(session_ended_at=now))


async def reset_failures(conn: AsyncConnection, conversation_id: str) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conversation_id)
                       .values(link_failures=0))


async def resends_since(conn: AsyncConnection, conversation_id: str, since: datetime
                        ) -> list[datetime]:
    """When each staff-resent link of the conversation was made since ``since``, oldest
    first."""
    return list((await conn.execute(
        select(secure_links.c.created_at)
        .where(secure_links.c.conversation_id == conversation_id,
               secure_links.c.resent_by.is_not(None), secure_links.c.created_at > since)
        .order_by(secure_links.c.created_at))).scalars())


async def revoke_conversation_links(conn: AsyncConnection, account_id: str,
                                    conversation_id: str, now: datetime) -> int:
    result = await conn.execute(
        update(secure_links).where(secure_links.c.account_id == account_id,
                                   secure_links.c.conversation_id == conversation_id,
                                   secure_links.c.revoked_at.is_(None))
        .values(revoked_at=now))
    return result.rowcount


async def insert_code(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(link_codes.insert().values(**values))


async def live_codes(conn: AsyncConnection, token_hash: str, now: datetime
                     ) -> list[RowMapping]:
    return list((await conn.execute(
        select(link_codes).where(link_codes.c.token_hash == token_hash,
                                 link_codes.c.used_at.is_(None),
                                 link_codes.c.expires_at > now))).mappings().all())


async def use_code(conn: AsyncConnection, code_id: int, now: datetime) -> bool:
    result = await conn.execute(update(link_codes).where(link_codes.c.id == code_id,
                                                         link_codes.c.used_at.is_(None))
                                .values(used_at=now))
    return result.rowcount == 1


async def codes_sent_since(conn: AsyncConnection, token_hash: str, since: datetime
                           ) -> list[datetime]:
    """When each code for the link was made since ``since``, oldest first."""
    return list((await conn.execute(
        select(link_codes.c.created_at).where(link_codes.c.token_hash == token_hash,
                                              link_codes.c.created_at > since)
        .order_by(link_codes.c.created_at))).scalars())
