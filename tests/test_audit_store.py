"""The stored audit log: the database refuses edits, and `securechat audit verify` passes
after real traffic but fails, naming the entry, once a row is edited, deleted or the tail
is cut off (by someone able to bypass the append-only trigger).

Tampering happens on a private database per test (a scratch PostgreSQL database or a
SQLite file), so the session's shared database is never left broken.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from server.audit import SYSTEM_STREAM, Actor, AuditEntry, entry_hash
from server.clock import FakeClock
from server.crypto import MasterKey
from server.errors import AppError
from server.notify import Offline
from server.protocol import Sender, SendRequest
from server.runtime import Services, build_services
from server.store import audit_log as audit_store
from server.store import migrate
from server.store.db import Database
from server.store.tables import audit_heads, audit_log, conversations, messages
from tests.cli import run_cli, store_env
from tests.conftest import IN_CI, PASSWORD, PG_ADMIN_URL, Clinic, make_clinic, settings_for_tests

SQLITE_TRIGGERS = {
    verb: f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
          "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for verb in ("UPDATE", "DELETE")
}


# --- a private database per test ---------------------------------------------------------

async def _pg_admin(statement: str) -> None:
    conn = await asyncpg.connect(make_url(PG_ADMIN_URL).set(drivername="postgresql")
                                 .render_as_string(hide_password=False), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def private_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database that only this test uses."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"securechat_audit_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc})"
        if IN_CI:
            pytest.fail(f"{message}: CI must provide it", pytrace=False)
        pytest.skip(message)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
async def private_services(private_url: str, master_key: bytes, clock: FakeClock
                           ) -> AsyncIterator[Services]:
    services = build_services(settings_for_tests(database_url=private_url,
                                                 password_hash_concurrency=2), master_key, clock,
                              notifier=Offline())
    yield services
    await services.db.close()


# --- helpers -----------------------------------------------------------------------------

async def audit_verify(database_url: str, master_key: bytes) -> tuple[int, str]:
    """Run `securechat audit verify` as its own process; returns (exit code, stdout)."""
    code, out, err = await run_cli("audit", "verify", env=store_env(database_url, master_key))
    assert code in (0, 1), err
    return code, out


async def make_traffic(services: Services) -> Clinic:
    """What a working day leaves in the log: sign-ins (good and bad), patients, messages,
    history reads, a key rotation."""
    clinic = await make_clinic(services)
    await services.auth.login(clinic.staff_email, PASSWORD, Actor("anonymous", ip="10.0.0.1"))
    with pytest.raises(AppError):
        await services.auth.login("nobody@clinic.test", "not the password at all",
                                  Actor("anonymous", ip="10.0.0.2"))
    staff = Sender("staff", clinic.staff_id, "Nurse")
    for i in range(4):
        await services.messaging.send(
            clinic.account_id, staff, clinic.conversation_id,
            SendRequest(client_msg_id=f"m-{i}", body=f"message {i}", secure=i % 2 == 0),
            Actor("staff", clinic.staff_id))
    await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                     before_seq=None, limit=50,
                                     actor=Actor("staff", clinic.staff_id))
    await services.accounts.rotate_keys()
    return clinic


async def stream_rows(services: Services, stream: str) -> list:
    async with services.db.read() as conn:
        return [dict(row) async for row in audit_store.stream_rows(conn, stream)]


async def as_attacker(db: Database, statement) -> None:
    """Run ``statement`` on audit_log the way someone with DDL rights could: switch the
    append-only trigger off, change the rows, switch it back on (one transaction)."""
    async with db.write() as conn:
        if db.is_postgres:
            await conn.execute(text(
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            await conn.execute(statement)
            await conn.execute(text(
                "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            for verb in SQLITE_TRIGGERS:
                await conn.execute(text(f"DROP TRIGGER audit_log_no_{verb.lower()}"))
            await conn.execute(statement)
            for create in SQLITE_TRIGGERS.values():
                await conn.execute(text(create))


async def assert_append_only(db: Database, row_id: int) -> None:
    for statement in (update(audit_log).where(audit_log.c.id == row_id)
                      .values(action="audit.forged"),
                      delete(audit_log).where(audit_log.c.id == row_id)):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.write() as conn:
                await conn.execute(statement)


# --- the tests ---------------------------------------------------------------------------

async def test_the_database_refuses_to_change_audit_rows(services: Services,
                                                         clinic: Clinic) -> None:
    """UPDATE and DELETE on audit_log are refused by the append-only trigger (and
    TRUNCATE on PostgreSQL); the row stays as written."""
    before = (await stream_rows(services, clinic.account_id))[0]
    await assert_append_only(services.db, before["id"])
    if services.db.is_postgres:
        with pytest.raises(DBAPIError, match="append-only"):
            async with services.db.write() as conn:
                await conn.execute(text("TRUNCATE audit_log"))
    assert (await stream_rows(services, clinic.account_id))[0] == before


async def test_verify_passes_then_names_an_edited_entry(private_services: Services,
                                                        private_url: str,
                                                        master_key: bytes) -> None:
    """`securechat audit verify` passes after the traffic and, after one row's action is
    edited, exits 1 naming the stream, seq and entry id."""
    clinic = await make_traffic(private_services)
    code, out = await audit_verify(private_url, master_key)
    assert code == 0, out
    assert f"ok   stream {clinic.account_id}" in out
    assert f"ok   stream {SYSTEM_STREAM}" in out
    assert "audit log verified" in out

    rows = await stream_rows(private_services, clinic.account_id)
    assert len(rows) >= 10
    target = rows[4]
    await assert_append_only(private_services.db, target["id"])
    await as_attacker(private_services.db, update(audit_log)
                      .where(audit_log.c.id == target["id"]).values(action="audit.read"))
    assert (await stream_rows(private_services, clinic.account_id))[4]["action"] \
        == "audit.read"
    await assert_append_only(private_services.db, target["id"])  # the trigger is back on

    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"FAIL audit chain broken in stream {clinic.account_id} at seq {target['seq']} "
            f"(entry id {target['id']}): the entry was altered") in out
    assert f"ok   stream {SYSTEM_STREAM}" in out
    assert "1 broken chain(s)" in out


async def test_an_edit_with_a_recomputed_hash_is_found_at_the_next_entry(
        private_services: Services, private_url: str, master_key: bytes) -> None:
    """Rewriting a row's hash to match its edit (even with the key) breaks the link from
    the entry after it."""
    clinic = await make_traffic(private_services)
    rows = await stream_rows(private_services, clinic.account_id)
    target, following = rows[3], rows[4]
    forged = AuditEntry(**{**{f: target[f] for f in AuditEntry.__struct_fields__},
                           "actor_id": "someone-else"})
    await as_attacker(private_services.db, update(audit_log)
                      .where(audit_log.c.id == target["id"])
                      .values(actor_id="someone-else",
                              entry_hash=entry_hash(target["prev_hash"], forged,
                                                    MasterKey(master_key).audit_key)))
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"at seq {following['seq']} (entry id {following['id']}): "
            "prev_hash does not match the entry before") in out


async def test_verify_finds_a_deleted_entry(private_services: Services, private_url: str,
                                            master_key: bytes) -> None:
    """A row deleted from the middle of a stream is reported as a seq gap at its place."""
    clinic = await make_traffic(private_services)
    rows = await stream_rows(private_services, clinic.account_id)
    gone, following = rows[5], rows[6]
    await as_attacker(private_services.db,
                      delete(audit_log).where(audit_log.c.id == gone["id"]))
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"FAIL audit chain broken in stream {clinic.account_id} at seq {gone['seq']} "
            f"(entry id {following['id']}): expected seq {gone['seq']}, "
            f"found {following['seq']}") in out


async def test_verify_finds_a_truncated_tail(private_services: Services, private_url: str,
                                             master_key: bytes) -> None:
    """Deleting the newest rows leaves a chain that holds, but the head disagrees."""
    clinic = await make_traffic(private_services)
    rows = await stream_rows(private_services, clinic.account_id)
    last = rows[-1]["seq"]
    async with private_services.db.read() as conn:
        head = (await conn.execute(select(audit_heads.c.seq).where(
            audit_heads.c.stream == clinic.account_id))).scalar_one()
    assert head == last
    await as_attacker(private_services.db, delete(audit_log).where(
        audit_log.c.stream == clinic.account_id, audit_log.c.seq > last - 2))
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"FAIL audit chain broken in stream {clinic.account_id} at seq {last - 1} "
            f"(end of stream): the head records seq {last} but the log ends at "
            f"seq {last - 2}") in out


async def test_verify_finds_a_stream_deleted_entirely(private_services: Services,
                                                      private_url: str,
                                                      master_key: bytes) -> None:
    """Deleting every row of a stream is still caught through its head."""
    clinic = await make_traffic(private_services)
    last = (await stream_rows(private_services, clinic.account_id))[-1]["seq"]
    await as_attacker(private_services.db, delete(audit_log).where(
        audit_log.c.stream == clinic.account_id))
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"in stream {clinic.account_id} at seq 1 (end of stream): the head records "
            f"seq {last} but the log ends at seq 0") in out


async def test_entries_count_up_per_stream(private_services: Services) -> None:
    """Each stream numbers its entries 1, 2, 3... and its head names the newest."""
    clinic = await make_traffic(private_services)
    other = await make_clinic(private_services, phone="+14155550109")
    async with private_services.db.read() as conn:
        heads = await audit_store.heads(conn)
    for stream in (clinic.account_id, other.account_id, SYSTEM_STREAM):
        rows = await stream_rows(private_services, stream)
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert heads[stream] == (rows[-1]["seq"], rows[-1]["entry_hash"])
    system_rows = await stream_rows(private_services, SYSTEM_STREAM)
    assert [(r["action"], r["outcome"]) for r in system_rows] == [("auth.login", "denied")]


async def test_a_failed_audit_append_rolls_back_the_action(private_services: Services
                                                           ) -> None:
    """An action and its audit entry commit together: when the entry cannot be written,
    the message is not stored and its seq is not used; a history read fails closed."""
    services = private_services
    clinic = await make_clinic(services)
    # Plant a row holding the stream's next seq, so the next audit insert collides.
    async with services.db.read() as conn:
        seq, _ = (await audit_store.heads(conn))[clinic.account_id]
    async with services.db.write() as conn:
        await conn.execute(audit_log.insert().values(
            stream=clinic.account_id, seq=seq + 1, ts="2026-01-01T00:00:00.000000Z",
            actor_kind="system", action="planted", outcome="ok", details="{}",
            prev_hash="0" * 64, entry_hash="0" * 64))
    actor = Actor("staff", clinic.staff_id)
    with pytest.raises(DBAPIError):
        await services.messaging.send(
            clinic.account_id, Sender("staff", clinic.staff_id, "Nurse"),
            clinic.conversation_id,
            SendRequest(client_msg_id="rolled-back", body="never stored"), actor)
    async with services.db.read() as conn:
        stored = (await conn.execute(select(messages.c.id).where(
            messages.c.conversation_id == clinic.conversation_id))).all()
        last_seq = (await conn.execute(select(conversations.c.last_seq).where(
            conversations.c.id == clinic.conversation_id))).scalar_one()
    assert (stored, last_seq) == ([], 0)
    with pytest.raises(DBAPIError):
        await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                         before_seq=None, limit=50, actor=actor)
