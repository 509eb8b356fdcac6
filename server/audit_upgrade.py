"""Anchoring the audit entries written before the chain was keyed (once per store).

A store written by an earlier build holds entries linked by plain SHA-256
(:func:`server.audit.legacy_entry_hash`). When this build's server first starts on it,
:func:`anchor_legacy` checks each stream's unkeyed chain and appends to it a keyed
``audit.legacy_anchored`` entry. That entry is the anchor: its MAC covers the stream, its
seq (the last unkeyed seq + 1) and its ``prev_hash`` (the last unkeyed hash, also named in
its details), so :class:`server.audit.ChainVerifier` accepts the unkeyed prefix only as
it was when anchored, and nothing unkeyed after it. A stream already followed by a keyed
entry (say ``create-admin`` ran before the first start) is pinned by that entry and
needs no anchor.

Anchoring happens once per store, not at every start: the same transaction appends a
keyed ``audit.chain_keyed`` entry to the system stream, and a node that finds one (with a
valid MAC) anchors nothing. Otherwise anyone able to write the database could plant a
new stream of unkeyed entries and have the next restart vouch for it. A fresh store gets
its ``audit.chain_keyed`` entry at its first start, and no anchors.

It runs at server start-up, because ``securechat migrate`` is given no master key
(docs/operations.md). Two nodes starting at once are serialised by the locked heads and
the marker check under them: the second finds the marker and does nothing. Entries
hold ids, seqs and hashes only.
"""

from __future__ import annotations

import logging

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from server.audit import (
    SYSTEM,
    SYSTEM_STREAM,
    AuditEntry,
    ChainBreak,
    NewEntry,
    append_many,
    entry_hash,
    walk,
)
from server.clock import Clock
from server.store import audit_log
from server.store.db import Database

ANCHOR_ACTION = "audit.legacy_anchored"
MARKER_ACTION = "audit.chain_keyed"

log = logging.getLogger("securechat.audit")


class Upgrade(msgspec.Struct, frozen=True):
    """What the one-time anchoring did: each anchored stream's last unkeyed (seq,
    hash), and the streams whose unkeyed chain was already broken (left unanchored:
    ``audit verify`` keeps naming their break)."""

    anchored: dict[str, tuple[int, str]]
    refused: list[ChainBreak]


async def anchor_legacy(db: Database, clock: Clock, key: bytes) -> Upgrade | None:
    """Anchor every stream's unkeyed entries, once per store; None when it was done."""
    async with db.read() as conn:
        if await _marked(conn, key):
            return None
        unanchored, refused = await _survey(conn, key)
    async with db.write() as conn:
        heads = await audit_log.lock_heads(conn, {SYSTEM_STREAM, *unanchored})
        if await _marked(conn, key):  # another node did it while we surveyed
            return None
        # A stream that moved since the survey was appended to by a keyed writer (which
        # pins it) or by someone else (``audit verify`` will say): no anchor either way.
        anchored = {stream: tail for stream, tail in unanchored.items()
                    if heads[stream] == tail}
        await append_many(conn, clock, [
            *(NewEntry(stream=stream, actor=SYSTEM, action=ANCHOR_ACTION,
                       details={"legacy_seq": seq, "legacy_hash": digest})
              for stream, (seq, digest) in sorted(anchored.items())),
            NewEntry(stream=SYSTEM_STREAM, actor=SYSTEM, action=MARKER_ACTION,
                     details={"anchored": len(anchored), "unverified": len(refused)}),
        ])
    for stream, (seq, _) in sorted(anchored.items()):
        log.info("audit stream %s: unkeyed entries 1-%d anchored", stream, seq)
    for broken in refused:
        log.error("audit stream %s does not verify, so its unkeyed entries are left "
                  "unanchored: %s", broken.stream, broken)
    return Upgrade(anchored, refused)


async def _marked(conn: AsyncConnection, key: bytes) -> bool:
    """The store holds a genuine ``audit.chain_keyed`` entry (a planted one has no MAC)."""
    for row in await audit_log.with_action(conn, SYSTEM_STREAM, MARKER_ACTION):
        entry = AuditEntry(**{name: row[name] for name in AuditEntry.__struct_fields__})
        if row["entry_hash"] == entry_hash(row["prev_hash"], entry, key):
            return True
    return False


async def _survey(conn: AsyncConnection, key: bytes
                  ) -> tuple[dict[str, tuple[int, str]], list[ChainBreak]]:
    """Every stream whose intact unkeyed chain no keyed entry follows, with its last
    (seq, hash); and every stream whose chain is broken."""
    heads = await audit_log.heads(conn)
    unanchored, refused = {}, []
    for stream in sorted(set(heads) | set(await audit_log.streams(conn))):
        checker, broken = await walk(conn, stream, key)
        broken = broken or checker.check_head(heads.get(stream))
        if broken is not None:
            refused.append(broken)
        elif checker.unanchored:
            unanchored[stream] = (checker.expected_seq - 1, checker.prev)
    return unanchored, refused
