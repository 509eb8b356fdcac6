"""What an account holds in the store, read whole, so a refused request can be shown to
have changed nothing (not only that it answered with an error)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from server.runtime import Services
from server.store import tables

# Everything an account owns, except the append-only audit log (refusals are audited)
# and the sign-in throttle (failures are counted: that is the lockout working).
_OWNED = [tables.staff, tables.patients, tables.conversations, tables.messages,
          tables.read_pointers, tables.sessions, tables.sms_outbox, tables.secure_links]


async def snapshot(services: Services, account_id: str,
                   only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every row the account owns, table by table (``only`` these), in a stable order."""
    found: dict[str, Any] = {}
    async with services.db.read() as conn:
        found["accounts"] = (await conn.execute(select(tables.accounts).where(
            tables.accounts.c.id == account_id))).all()
        conversations = select(tables.conversations.c.id).where(
            tables.conversations.c.account_id == account_id)
        for table in _OWNED:
            if only is not None and table.name not in only:
                continue
            owned = (table.c.account_id == account_id if "account_id" in table.c
                     else table.c.conversation_id.in_(conversations))
            rows = (await conn.execute(select(table).where(owned))).all()
            found[table.name] = sorted(rows, key=repr)
    return found


# For tests whose behaviour does not depend on the database (the runtime budget): the
# ``database_url`` fixture runs only its SQLite half.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
