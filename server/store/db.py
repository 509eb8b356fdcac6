"""The database handle: one async engine, write and read transactions, and health.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so an
acknowledged message survives a power cut, and every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock up front, so two writers queue on
``busy_timeout`` instead of deadlocking on a lock upgrade. SQLite has one writer at a
time anyway, so a node writes through ONE long-lived connection, taken in turn under an
``asyncio.Lock``: writers of this process queue in the event loop instead of sleeping
in SQLite's busy handler (which sleeps up to 100 ms between tries whatever the lock
does); only another process's writer is waited for there. Reads use a fixed pool of
their own (WAL readers never block the writer), with no overflow connections opened
and closed under load.

PostgreSQL runs through asyncpg at READ COMMITTED; writers that must serialise take row
locks. Connections are not pinged at checkout (``pool_pre_ping`` cost a round trip per
transaction): a connection that died with the server fails its one unit of work, the
pool then discards every connection older than the failure, and the group-commit writer
retries such a batch once (``server/store/group_commit.py``); other callers answer
``unavailable`` and the client resends, which every write path allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# How long a SQLite writer waits for the lock before failing; generous because the
# lock is held for one short transaction at a time.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# SQLite read connections (each is a thread in aiosqlite). WAL lets them all read beside
# the writer; a fixed ten, because the baseline's 5 + 10 overflow opened and closed
# connections (and threads) all the time: names reached Thread-115 in one run
# (docs/performance.md).
SQLITE_READ_POOL = 10
# How long the event loop may keep the GIL while aiosqlite's threads wait for it.
# Python's default, 5 ms, is paid at every statement hand-off once the loop is busy
# (it rarely blocks, so it drops the GIL only when forced): measured with a busy loop,
# the group-commit writer did 62 sends/s at 5 ms and 285/s at 0.5 ms (issue 7's
# write-path measurements). Set for the whole process when a node runs on SQLite.
SQLITE_SWITCH_INTERVAL = 0.0005
# Recycle PostgreSQL connections hourly instead of pinging them at every checkout.
POSTGRES_RECYCLE_SECONDS = 3600

# Statement parameters are password hashes, typed sign-in text, blind indexes and
# ciphertext: never in a log line (SQLAlchemy writes them at DEBUG, and into the text of
# its exceptions). echo stays off; LOG_LEVEL=DEBUG still shows the statements.
ENGINE_OPTIONS = {"hide_parameters": True, "echo": False}

# The execution option that carries the audit log's MAC key on write connections.
AUDIT_KEY_OPTION = "securechat_audit_key"

T = TypeVar("T")


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

    def __init__(self, url: str, *, pool_size: int = 10, audit_key: bytes | None = None
                 ) -> None:
        """``audit_key`` rides on every write transaction (an execution option) so the
        audit log can key its chain in whichever transaction appends to it
        (server/audit.py); without it, writes work but audit appends refuse."""
        self.url = url
        target = make_url(async_url(url))
        self.dialect = target.get_backend_name()
        self._write_lock: asyncio.Lock | None = None
        if self.dialect == "sqlite":
            in_memory = not target.database or target.database == ":memory:"
            if not in_memory:
                create_private(Path(target.database))
            self.engine: AsyncEngine = create_async_engine(
                target, pool_size=SQLITE_READ_POOL, max_overflow=0, **ENGINE_OPTIONS)
            _configure_sqlite(self.engine)
            # In memory, every connection is a database of its own: share the one engine.
            self.write_engine = self.engine if in_memory else create_async_engine(
                target, pool_size=1, max_overflow=0, **ENGINE_OPTIONS)
            if self.write_engine is not self.engine:
                _configure_sqlite(self.write_engine)
            self._write_lock = asyncio.Lock()
            sys.setswitchinterval(min(sys.getswitchinterval(), SQLITE_SWITCH_INTERVAL))
        else:
            self.engine = create_async_engine(
                target, pool_size=pool_size, max_overflow=pool_size,
                pool_recycle=POSTGRES_RECYCLE_SECONDS, **ENGINE_OPTIONS)
            self.write_engine = self.engine
        self._writer = self.write_engine.execution_options(
            sqlite_begin="BEGIN IMMEDIATE", **{AUDIT_KEY_OPTION: audit_key})

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits when the block ends and rolls back on error.

        On SQLite, writers of this process take turns (see the module docstring); one
        that waits longer than the busy timeout gets ``TimeoutError``, as it would have
        got ``database is locked`` from SQLite.
        """
        if self._write_lock is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
            await self._write_lock.acquire()
        try:
            async with self._writer.begin() as conn:
                yield conn
        finally:
            self._write_lock.release()

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
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def create_private(path: Path) -> None:
    """Create a SQLite database file readable by its owner only (0600, in a directory
    made 0700 when it is new), before SQLite would create it under the process umask
    (0644 is usual). Its ``-wal`` and ``-shm`` files take the same mode from it. An
    existing file is left as it is (``securechat demo`` tightens its own)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


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


def padded(values: Iterable[T]) -> list[T]:
    """``values`` (sorted, without repeats) padded to a power-of-two length by repeating
    the last one, for an expanding ``IN``: each length is a new SQL text, which asyncpg
    prepares (a round trip and a plan) and keeps in a cache of 100 per connection, and
    group-commit batches vary in length all the time. Padded, a statement has at most
    nine texts for lists up to 256, on either dialect. (``= ANY(:array)`` would have
    one text on PostgreSQL only; it measured no faster here.)"""
    items = sorted(set(values))
    if items:
        items += [items[-1]] * ((1 << (len(items) - 1).bit_length()) - len(items))
    return items


def upsert(conn: AsyncConnection, table):
    """An INSERT that supports ``on_conflict_do_nothing/do_update`` on either dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table)
