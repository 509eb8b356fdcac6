"""An account's audit log as its admins read it: newest first a page at a time, or every
match as CSV. Each read is itself audited, with its filters, before anything is read."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from server import audit
from server.audit import Actor
from server.clock import Clock
from server.errors import invalid
from server.store import audit_log as audit_store
from server.store.db import Database

AUDIT_COLUMNS = ("seq", "ts", "actor_kind", "actor_id", "action", "object_type", "object_id",
                 "outcome", "ip", "request_id", "details", "entry_hash")
# The longest page a request may ask for; an export reads this many per round trip.
MAX_AUDIT_PAGE = 1000
# The filters are written into the read's own audit entry; the boxes take free text (a
# patient's name typed in the wrong one), so only an action name or an id is accepted.
ACTION_NAME = re.compile(r"[a-z]+(?:\.[a-z_]+)+")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """What to read. ``since`` and ``until`` are RFC 3339 in the store's format.

    Raises:
        AppError: ``invalid_request`` for an action that is not an action name, an
            ``actor_id`` or ``patient_id`` that is not an id, a ``limit`` out of range.
    """

    action: str | None = None
    actor_id: str | None = None
    patient_id: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 100  # entries per page (an export reads them all)

    def __post_init__(self) -> None:
        if self.action is not None and not ACTION_NAME.fullmatch(self.action):
            raise invalid("action: not an action name such as auth.login")
        for name, what in (("actor_id", "a staff member's id"),
                           ("patient_id", "a patient's id")):
            value = getattr(self, name)
            if value is not None:
                try:
                    uuid.UUID(value)
                except ValueError:
                    raise invalid(f"{name}: not {what}") from None
        if not 1 <= self.limit <= MAX_AUDIT_PAGE:
            raise invalid(f"limit: must be between 1 and {MAX_AUDIT_PAGE}")

    def filters(self) -> dict[str, str | None]:
        return {name: value for name, value in asdict(self).items() if name != "limit"}


class AuditPage(msgspec.Struct, frozen=True):
    entries: list[dict[str, Any]]
    has_more: bool


class AuditRecords:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def page(self, account_id: str, actor: Actor, query: AuditQuery,
                   before_seq: int | None) -> AuditPage:
        """Up to ``query.limit`` entries older than ``before_seq``, newest first (this
        read's own entry among them on the first page: it is committed before the
        query)."""
        await self._audit(account_id, actor, "audit.read", query)
        async with self._db.read() as conn:
            rows = await audit_store.search(conn, account_id, **query.filters(),
                                            before_seq=before_seq, limit=query.limit + 1)
        return AuditPage([{column: row[column] for column in AUDIT_COLUMNS}
                          for row in rows[:query.limit]], len(rows) > query.limit)

    async def export(self, account_id: str, actor: Actor, query: AuditQuery
                     ) -> AsyncIterator[str]:
        """Every matching entry as CSV text, header first, a page per chunk; the export
        is audited before the first chunk."""
        await self._audit(account_id, actor, "audit.exported", query)
        return self._csv_rows(account_id, query.filters())

    async def _audit(self, account_id: str, actor: Actor, action: str,
                     query: AuditQuery) -> None:
        async with self._db.write() as conn:
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action=action,
                               details={k: v for k, v in query.filters().items() if v})

    async def _csv_rows(self, account_id: str, filters: dict) -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(AUDIT_COLUMNS)
        before = None
        while True:
            async with self._db.read() as conn:
                rows = await audit_store.search(conn, account_id, **filters,
                                                before_seq=before, limit=MAX_AUDIT_PAGE)
            for row in rows:
                writer.writerow([_csv_safe(row[column]) for column in AUDIT_COLUMNS])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(rows) < MAX_AUDIT_PAGE:
                return
            before = rows[-1]["seq"]


def _csv_safe(value: object) -> object:
    """A leading = + - @ would make a spreadsheet run the cell as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value
