"""Queries for the audit log and its per-stream heads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import padded, upsert
from server.store.tables import audit_heads, audit_log, conversations

GENESIS_HASH = "0" * 64
# Rows read per round trip when walking a whole stream (verification, export).
PAGE = 1000


# Built once: the hot appends only bind values (SQLAlchemy caches their compiled form,
# and nothing is rebuilt per call; docs/performance.md measured 10-15 % of a send in
# statement construction).
_LOCK_HEADS = (
    select(audit_heads.c.stream, audit_heads.c.seq, audit_heads.c.hash)
    .where(audit_heads.c.stream.in_(bindparam("streams", expanding=True)))
    .order_by(audit_heads.c.stream)
    .with_for_update()
)
_INSERT_ENTRY = audit_log.insert()
_SET_HEAD = (update(audit_heads).where(audit_heads.c.stream == bindparam("b_stream"))
             .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")))


async def lock_head(conn: AsyncConnection, stream: str) -> tuple[int, str]:
    """Lock the stream's head row until commit and return its (seq, hash).

    The lock serialises appends to one stream, which is what keeps ``seq`` gapless.
    """
    return (await lock_heads(conn, [stream]))[stream]


async def lock_heads(conn: AsyncConnection, streams: Iterable[str]
                     ) -> dict[str, tuple[int, str]]:
    """Lock the heads of ``streams`` until commit (in stream order, so two writers
    locking overlapping sets never deadlock) and return each one's (seq, hash); a
    stream without a head gets a genesis head first."""
    wanted = sorted(set(streams))
    found = {row.stream: (row.seq, row.hash)
             for row in await conn.execute(_LOCK_HEADS, {"streams": padded(wanted)})}
    missing = [stream for stream in wanted if stream not in found]
    if missing:
        await conn.execute(upsert(conn, audit_heads).on_conflict_do_nothing(),
                           [{"stream": s, "seq": 0, "hash": GENESIS_HASH} for s in missing])
        found.update((row.stream, (row.seq, row.hash))
                     for row in await conn.execute(_LOCK_HEADS,
                                                   {"streams": padded(missing)}))
    return found


async def insert(conn: AsyncConnection, entry: Mapping[str, Any], prev_hash: str,
                 entry_hash: str) -> None:
    await insert_many(conn, [{**entry, "prev_hash": prev_hash, "entry_hash": entry_hash}],
                      {entry["stream"]: (entry["seq"], entry_hash)})


async def insert_many(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]],
                      new_heads: Mapping[str, tuple[int, str]]) -> None:
    """Insert chained entries (each with its ``prev_hash`` and ``entry_hash``) and move
    each stream's head to its newest one: one statement each, whatever the count."""
    await conn.execute(_INSERT_ENTRY, list(rows))
    await conn.execute(_SET_HEAD, [{"b_stream": stream, "b_seq": seq, "b_hash": digest}
                                   for stream, (seq, digest) in new_heads.items()])


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


async def with_action(conn: AsyncConnection, stream: str, action: str
                      ) -> list[Mapping[str, Any]]:
    """A stream's entries of one action, oldest first."""
    return list((await conn.execute(
        select(audit_log).where(audit_log.c.stream == stream, audit_log.c.action == action)
        .order_by(audit_log.c.seq))).mappings().all())


async def search(conn: AsyncConnection, stream: str, *, action: str | None = None,
                 actor_id: str | None = None, patient_id: str | None = None,
                 since: str | None = None, until: str | None = None,
                 before_seq: int | None = None, limit: int = 100
                 ) -> list[Mapping[str, Any]]:
    """Newest-first entries of one stream, filtered; ``ts`` bounds are RFC 3339 strings.

    ``patient_id`` keeps the entries about one patient of the stream's account: the
    patient as actor or object, their conversation as object, and the entries of its
    messages (which name the conversation in their details)."""
    query = select(audit_log).where(audit_log.c.stream == stream)
    if action:
        query = query.where(audit_log.c.action == action)
    if actor_id:
        query = query.where(audit_log.c.actor_id == actor_id)
    if patient_id:
        query = query.where(await _about_patient(conn, stream, patient_id))
    if since:
        query = query.where(audit_log.c.ts >= since)
    if until:
        query = query.where(audit_log.c.ts < until)
    if before_seq is not None:
        query = query.where(audit_log.c.seq < before_seq)
    query = query.order_by(audit_log.c.seq.desc()).limit(limit)
    return list((await conn.execute(query)).mappings().all())


async def _about_patient(conn: AsyncConnection, account_id: str, patient_id: str
                         ) -> ColumnElement[bool]:
    conversation_ids = list((await conn.execute(
        select(conversations.c.id).where(conversations.c.account_id == account_id,
                                         conversations.c.patient_id == patient_id))
    ).scalars())
    # Details are canonical JSON (sorted keys, no spaces) and our uuids hold no LIKE
    # wildcard, so this names exactly the entries of the conversation's messages.
    return or_(audit_log.c.actor_id == patient_id,
               audit_log.c.object_id.in_([patient_id, *conversation_ids]),
               *(audit_log.c.details.like(f'%"conversation_id":"{cid}"%')
                 for cid in conversation_ids))


async def count(conn: AsyncConnection, stream: str) -> int:
    return (await conn.execute(select(func.count()).select_from(audit_log)
                               .where(audit_log.c.stream == stream))).scalar_one()
