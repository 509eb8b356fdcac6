"""Alembic environment: runs migrations over the app's own async engine."""

from __future__ import annotations

import asyncio

from alembic import context

from server.store.db import Database
from server.store.tables import metadata

config = context.config


def _run(sync_conn) -> None:
    context.configure(connection=sync_conn, target_metadata=metadata,
                      render_as_batch=sync_conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    db = Database(config.attributes["database_url"])
    try:
        async with db.write() as conn:
            await conn.run_sync(_run)
    finally:
        await db.close()


asyncio.run(_main())
