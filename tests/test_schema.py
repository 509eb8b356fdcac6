"""The migrations build exactly the schema the code declares (server/store/tables.py)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server.store.db import Database
from server.store.tables import metadata


async def test_migrations_match_the_tables(database_url: str) -> None:
    """No table, column, index or constraint differs between the two (both backends)."""
    db = Database(database_url)
    try:
        async with db.read() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    finally:
        await db.close()
    assert diff == []
