"""Run the Alembic migrations programmatically (``securechat migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from server.store.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaOutOfDate(RuntimeError):
    """The database is not at the newest migration: run ``securechat migrate``."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    """Bring the schema up to the newest revision; a no-op when it already is.

    Synchronous: Alembic runs its own event loop in ``migrations/env.py``, so call this
    outside a running loop (or through ``asyncio.to_thread``).
    """
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def check_current(db: Database) -> None:
    """Raises SchemaOutOfDate unless the schema is at this build's newest revision."""
    revision, head = await current_revision(db), head_revision()
    if revision != head:
        raise SchemaOutOfDate(f"database schema is at {revision or 'nothing'}, this build "
                              f"needs {head}: run `securechat migrate`")
