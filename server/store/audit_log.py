"""Queries for the audit log and its per-stream heads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import upsert
from server.store.tables import audit_heads, audit_log

GENESIS_HASH = "0" * 64
# Rows read per round trip when walking a whole stream (verification, export).
PAGE = 1000


async def lock_head(conn: AsyncConnection, stream: str) -> tuple[int, str]:
    """Lock the stream's head row until commit and return its (seq, hash).

    The lock serialises appends to one stream, which is what keeps ``seq`` gapless.
    """
    query = select(audit_heads.c.seq, audit_heads.c.hash).where(
        audit_heads.c.stream == stream).with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        await conn.execute(_insert_head_if_missing(conn, stream))
        row = (await conn.execute(query)).one()
    return row.seq, row.hash


def _insert_head_if_missing(conn: AsyncConnection, stream: str) -> Any:
    return upsert(conn, audit_heads).values(
        stream=stream, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing()


async def insert(conn: AsyncConnection, entry: Mapping[str, Any], prev_hash: str,
                 entry_hash: str) -> None:
    await conn.execute(audit_log.insert().values(
        **entry, prev_hash=prev_hash, entry_hash=entry_hash))
    await conn.execute(update(audit_heads).where(audit_heads.c.stream == entry["stream"])
                       .values(seq=entry["seq"], hash=entry_hash))


async def heads(conn: AsyncConnection) -> dict[str, tuple[int, str]]:
    rows = await conn.execute(select(audit_heads.c.stream, audit_heads.c.seq,
                                     audit_heads.c.hash))
    return {row.stream: (row.seq, row.hash) for row in rows}


async def streams(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(select(audit_log.c.stream).distinct())
    return [row.stream for row in rows]


async def stream_rows(conn: AsyncConnection, stream: str) -> AsyncIterator[Mapping[str, Any]]:
    """Every row of one stream in seq order, read a page at a time."""
    after = 0
    while True:
        page = (await conn.execute(
            select(audit_log).where(audit_log.c.stream == stream, audit_log.c.seq > after)
            .order_by(audit_log.c.seq).limit(PAGE))).mappings().all()
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1]["seq"]


async def search(conn: AsyncConnection, stream: str, *, action: str | None = None,
                 actor_id: str | None = None, since: str | None = None,
                 until: str | None = None, before_seq: int | None = None,
                 limit: int = 100) -> list[Mapping[str, Any]]:
    """Newest-first entries of one stream, filtered; ``ts`` bounds are RFC 3339 strings."""
    query = select(audit_log).where(audit_log.c.stream == stream)
    if action:
        query = query.where(audit_log.c.action == action)
    if actor_id:
        query = query.where(audit_log.c.actor_id == actor_id)
    if since:
        query = query.where(audit_log.c.ts >= since)
    if until:
        query = query.where(audit_log.c.ts < until)
    if before_seq is not None:
        query = query.where(audit_log.c.seq < before_seq)
    query = query.order_by(audit_log.c.seq.desc()).limit(limit)
    return list((await conn.execute(query)).mappings().all())


async def count(conn: AsyncConnection, stream: str) -> int:
    return (await conn.execute(select(func.count()).select_from(audit_log)
                               .where(audit_log.c.stream == stream))).scalar_one()
