"""The append-only, hash-chained audit log.

Each account has its own chain (``stream`` = account id; ``"system"`` for events outside
any account, such as a failed login for an unknown email). Entry *n* stores
``entry_hash = HMAC-SHA256(audit key, prev_hash || canonical_json(entry))`` and the
``prev_hash`` of entry *n-1*; ``seq`` counts 1, 2, 3... per stream under a row-locked
head, so an edited, deleted or inserted row breaks the chain at a place :func:`verify`
names. The audit key is derived from the master key (:class:`server.crypto.MasterKey`),
which never touches the database: someone who can write the database but not read the
key cannot recompute a link for a forged entry (a plain hash they could).

Entries written before the chain was keyed (plain SHA-256 links) still verify as a
stream's first entries once a keyed entry follows them; server/audit_upgrade.py anchors
them when the keyed build first starts (see :class:`ChainVerifier`).

The key travels with the store's write transactions (``Database(audit_key=...)``), so
every append, in whichever transaction, is keyed; a connection without it refuses to
append rather than write an unkeyed link.

Entries hold ids, actions and outcomes only: never PHI, tokens or passwords. The append
runs inside the caller's transaction, so an action and its audit entry commit together.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from server.clock import Clock, rfc3339
from server.store import audit_log
from server.store.audit_log import GENESIS_HASH
from server.store.db import AUDIT_KEY_OPTION, Database

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


def entry_hash(prev_hash: str, entry: AuditEntry, key: bytes) -> str:
    """The chain link: HMAC-SHA256 under the audit key over the previous hash and the
    entry's canonical JSON (RFC 2104; 64 hex digits, the column's width)."""
    return hmac.new(key, prev_hash.encode() + _encoder.encode(entry),
                    hashlib.sha256).hexdigest()


def legacy_entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """The link of entries written before the chain was keyed: plain SHA-256, which
    anyone can recompute. Accepted only for a stream's first entries, and only when a
    keyed entry follows them (see :class:`ChainVerifier`)."""
    return hashlib.sha256(prev_hash.encode() + _encoder.encode(entry)).hexdigest()


def _connection_key(conn: AsyncConnection) -> bytes:
    key = conn.sync_connection.get_execution_options().get(AUDIT_KEY_OPTION)
    if not key:
        raise RuntimeError("audit entries are appended only in Database.write() "
                           "transactions of a store opened with the audit key")
    return key


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
    key = _connection_key(conn)
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
        digest = entry_hash(prev_hash, entry, key)
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
    """Checks one stream's rows, fed in seq order, without holding them all in memory.

    A stream may begin with entries written before the chain was keyed (their links made
    by :func:`legacy_entry_hash`). They are accepted only as an unbroken prefix that a
    keyed entry then follows: that entry's MAC covers its seq and its ``prev_hash``, the
    prefix's last hash, so it anchors the prefix (server/audit_upgrade.py writes one per
    stream when the keyed build first starts). Editing the prefix, even recomputing every
    unkeyed link, no longer leads to the anchored hash; an unkeyed entry after a keyed
    one is refused; and unkeyed entries that no keyed entry follows fail :meth:`finish`.
    """

    def __init__(self, stream: str, key: bytes) -> None:
        self.stream = stream
        self._key = key
        self.expected_seq = 1
        self.prev = GENESIS_HASH
        self.legacy = 0  # unkeyed entries read, all before the first keyed one
        self._keyed = False
        self._first_id: int | None = None

    @property
    def unanchored(self) -> bool:
        """Unkeyed entries were read and no keyed entry follows them (yet)."""
        return self.legacy > 0 and not self._keyed

    def feed(self, row: Mapping) -> ChainBreak | None:
        """Check the next row; returns the break it shows, or None."""
        entry = AuditEntry(**{name: row[name] for name in AuditEntry.__struct_fields__})
        if entry.seq != self.expected_seq:
            return self._break(row, f"expected seq {self.expected_seq}, found {entry.seq} "
                                    "(an entry is missing or was inserted)")
        if row["prev_hash"] != self.prev:
            return self._break(row, "prev_hash does not match the entry before")
        digest = entry_hash(self.prev, entry, self._key)
        # Offline checks: no timing oracle to hide.
        if row["entry_hash"] == digest:
            self._keyed = True
        elif legacy_entry_hash(self.prev, entry) != row["entry_hash"]:
            return self._break(row, "the entry was altered, or its link was not made "
                                    "with this master key")
        elif self._keyed:
            return self._break(row, "the entry was altered or forged: its link is "
                                    "unkeyed, after keyed ones (only entries from "
                                    "before the audit key may be unkeyed)")
        else:
            digest = row["entry_hash"]
            self.legacy += 1
            if self._first_id is None:
                self._first_id = row["id"]
        self.expected_seq, self.prev = self.expected_seq + 1, digest
        return None

    def finish(self, head: tuple[int, str] | None) -> ChainBreak | None:
        """Check the end of the stream: against its head (catches a truncated tail), and
        that no unkeyed entries are left without a keyed one after them."""
        broken = self.check_head(head)
        if broken is None and self.unanchored:
            return ChainBreak(self.stream, 1, self._first_id,
                              f"entries 1-{self.legacy} have unkeyed links and no keyed "
                              "entry anchors them (start this build's server once to "
                              "anchor them; if it has run, the anchor was removed)")
        return broken

    def check_head(self, head: tuple[int, str] | None) -> ChainBreak | None:
        """The stream's end against its head row."""
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


async def walk(conn: AsyncConnection, stream: str, key: bytes
               ) -> tuple[ChainVerifier, ChainBreak | None]:
    """Feed one stream's rows, in seq order, to a verifier; stops at the first break."""
    checker = ChainVerifier(stream, key)
    async for row in audit_log.stream_rows(conn, stream):
        if (broken := checker.feed(row)) is not None:
            return checker, broken
    return checker, None


async def verify(conn: AsyncConnection, key: bytes) -> AsyncIterator[ChainBreak | str]:
    """Verify every stream under the audit key; yields each stream's name when it
    holds, or its first break."""
    heads = await audit_log.heads(conn)
    for stream in sorted(set(heads) | set(await audit_log.streams(conn))):
        checker, broken = await walk(conn, stream, key)
        broken = broken or checker.finish(heads.get(stream))
        yield broken if broken is not None else stream
