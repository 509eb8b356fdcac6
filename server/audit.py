"""The append-only, hash-chained audit log.

Each account has its own chain (``stream`` = account id; ``"system"`` for events outside
any account, such as a failed login for an unknown email). Entry *n* stores
``entry_hash = SHA-256(prev_hash || canonical_json(entry))`` and the ``prev_hash`` of
entry *n-1*; ``seq`` counts 1, 2, 3... per stream under a row-locked head, so an edited,
deleted or inserted row breaks the chain at a place :func:`verify` names.

Entries hold ids, actions and outcomes only: never PHI, tokens or passwords. The append
runs inside the caller's transaction, so an action and its audit entry commit together.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from server.clock import Clock, rfc3339
from server.store import audit_log
from server.store.audit_log import GENESIS_HASH
from server.store.db import Database

SYSTEM_STREAM = "system"


class Actor(msgspec.Struct, frozen=True):
    """Who did it, and from where. ``kind`` is staff, patient, system or anonymous."""

    kind: str
    id: str | None = None
    ip: str | None = None
    request_id: str | None = None


SYSTEM = Actor("system")


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    seq: int
    ts: str
    actor_kind: str
    actor_id: str | None
    action: str
    object_type: str | None
    object_id: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    details: str  # canonical JSON of a flat map of ids and counts


_encoder = msgspec.json.Encoder(order="sorted")


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """The chain link: SHA-256 over the previous hash and the entry's canonical JSON."""
    return hashlib.sha256(prev_hash.encode() + _encoder.encode(entry)).hexdigest()


class NewEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry to append: what happened; the stream's seq, the time and the chain link
    are added by :func:`append_many`."""

    stream: str
    actor: Actor
    action: str
    object_type: str | None = None
    object_id: str | None = None
    outcome: str = "ok"
    details: Mapping[str, str | int | bool | None] | None = None


async def append(
    conn: AsyncConnection,
    clock: Clock,
    *,
    stream: str,
    actor: Actor,
    action: str,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str = "ok",
    details: Mapping[str, str | int | bool | None] | None = None,
) -> AuditEntry:
    """Append one entry to ``stream`` inside the caller's write transaction."""
    return (await append_many(conn, clock, [NewEntry(
        stream=stream, actor=actor, action=action, object_type=object_type,
        object_id=object_id, outcome=outcome, details=details)]))[0]


async def append_many(conn: AsyncConnection, clock: Clock, new: Sequence[NewEntry]
                      ) -> list[AuditEntry]:
    """Append entries, in order, inside the caller's write transaction.

    Each stream's head is read (and locked until commit) once, however many of its
    entries the batch holds, then the entries and the new heads are written with one
    statement each. The head is always read in this transaction, never remembered from
    an earlier one: other nodes append to the same streams.
    """
    if not new:
        return []
    heads = await audit_log.lock_heads(conn, {item.stream for item in new})
    ts = rfc3339(clock.now())
    entries, rows = [], []
    for item in new:
        seq, prev_hash = heads[item.stream]
        actor = item.actor
        entry = AuditEntry(
            stream=item.stream, seq=seq + 1, ts=ts, actor_kind=actor.kind,
            actor_id=actor.id, action=item.action, object_type=item.object_type,
            object_id=item.object_id, outcome=item.outcome, ip=actor.ip,
            request_id=actor.request_id,
            details=_encoder.encode(dict(item.details or {})).decode(),
        )
        digest = entry_hash(prev_hash, entry)
        row = msgspec.structs.asdict(entry)
        row["prev_hash"], row["entry_hash"] = prev_hash, digest
        rows.append(row)
        entries.append(entry)
        heads[item.stream] = (entry.seq, digest)
    touched = {item.stream for item in new}
    await audit_log.insert_many(conn, rows, {s: heads[s] for s in touched})
    return entries


async def record_integrity_failure(db: Database, clock: Clock, *, stream: str,
                                   object_type: str, object_id: str, reason: str) -> None:
    """Audit a stored ciphertext that failed to open, in a transaction of its own (the
    caller's read is about to fail). ``reason`` names ids only (a DecryptError message)."""
    async with db.write() as conn:
        await append(conn, clock, stream=stream, actor=SYSTEM,
                     action="integrity.decrypt_failed", object_type=object_type,
                     object_id=object_id, outcome="error", details={"reason": reason[:200]})


class ChainBreak(msgspec.Struct, frozen=True):
    """The first place a stream's chain does not hold."""

    stream: str
    seq: int
    entry_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"entry id {self.entry_id}" if self.entry_id is not None else "end of stream"
        return f"audit chain broken in stream {self.stream} at seq {self.seq} ({where}): " \
               f"{self.reason}"


class ChainVerifier:
    """Checks one stream's rows, fed in seq order, without holding them all in memory."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.expected_seq = 1
        self.prev = GENESIS_HASH

    def feed(self, row: Mapping) -> ChainBreak | None:
        """Check the next row; returns the break it shows, or None."""
        entry = AuditEntry(**{name: row[name] for name in AuditEntry.__struct_fields__})
        if entry.seq != self.expected_seq:
            return self._break(row, f"expected seq {self.expected_seq}, found {entry.seq} "
                                    "(an entry is missing or was inserted)")
        if row["prev_hash"] != self.prev:
            return self._break(row, "prev_hash does not match the entry before")
        digest = entry_hash(self.prev, entry)
        if row["entry_hash"] != digest:
            return self._break(row, "the entry was altered")
        self.expected_seq, self.prev = self.expected_seq + 1, digest
        return None

    def finish(self, head: tuple[int, str] | None) -> ChainBreak | None:
        """Check the end of the stream against its head (catches a truncated tail)."""
        last = self.expected_seq - 1
        if head is None or tuple(head) == (last, self.prev):
            return None
        if head[0] == last:
            return ChainBreak(self.stream, last, None,
                              "the last entry's hash does not match the head")
        return ChainBreak(self.stream, min(head[0], last) + 1, None,
                          f"the head records seq {head[0]} but the log ends at seq {last}")

    def _break(self, row: Mapping, reason: str) -> ChainBreak:
        return ChainBreak(self.stream, self.expected_seq, row["id"], reason)


async def verify(conn: AsyncConnection) -> AsyncIterator[ChainBreak | str]:
    """Verify every stream; yields each stream's name when it holds, or its first break."""
    heads = await audit_log.heads(conn)
    for stream in sorted(set(heads) | set(await audit_log.streams(conn))):
        checker = ChainVerifier(stream)
        broken = None
        async for row in audit_log.stream_rows(conn, stream):
            if (broken := checker.feed(row)) is not None:
                break
        broken = broken or checker.finish(heads.get(stream))
        yield broken if broken is not None else stream
