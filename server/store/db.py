"""The database handle: one async engine, write and read transactions, and health.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so an
acknowledged message survives a power cut, and every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock up front, so two writers queue on
``busy_timeout`` instead of deadlocking on a lock upgrade. PostgreSQL runs through
asyncpg at READ COMMITTED; writers that must serialise take row locks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# How long a SQLite writer waits for the lock before failing; generous because the
# lock is held for one short transaction at a time.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(url: str) -> str:
    """Map the contract's ``sqlite:///`` / ``postgresql://`` URLs to async drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


class Database:
    """Owns the engine. ``write()`` and ``read()`` each yield a connection in a transaction."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        target = make_url(async_url(url))
        self.dialect = target.get_backend_name()
        if self.dialect == "sqlite":
            if target.database and target.database != ":memory:":
                Path(target.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(target)
            _configure_sqlite(self.engine)
        else:
            self.engine = create_async_engine(
                target, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
        self._writer = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits when the block ends and rolls back on error."""
        async with self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only unit of work (a deferred transaction: no write lock)."""
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raises if the database does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to the "begin" hook below (SQLAlchemy's documented
        # recipe for SQLite), then set the pragmas each new connection needs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def upsert(conn: AsyncConnection, table):
    """An INSERT that supports ``on_conflict_do_nothing/do_update`` on either dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table)
