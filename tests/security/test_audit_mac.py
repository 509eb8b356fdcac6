"""The audit chain is keyed (issue 13): someone who can write the database but does not
hold the master key cannot add or rewrite an entry that ``securechat audit verify``
accepts, even when they recompute every hash and move the stream's head along.

Before the fix a link was a plain SHA-256 anyone could recompute: a forged entry
appended at the tail, with its head moved, verified.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import insert, update

from server.audit import AuditEntry
from server.clock import FakeClock
from server.notify import Offline
from server.runtime import Services, build_services
from server.store import migrate
from server.store.tables import audit_heads, audit_log
from tests.conftest import settings_for_tests
from tests.test_audit_store import as_attacker, audit_verify, make_traffic, stream_rows


@pytest.fixture
async def private(tmp_path: Path, master_key: bytes, clock: FakeClock
                  ) -> AsyncIterator[tuple[Services, str]]:
    """A database of this test's own (it is left tampered with), and its services. The
    MAC does not depend on the backend: SQLite only (test_audit_store.py runs both)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    services = build_services(settings_for_tests(database_url=url, password_hash_concurrency=2),
                              master_key, clock, notifier=Offline())
    yield services, url
    await services.db.close()


_encoder = msgspec.json.Encoder(order="sorted")


def unkeyed_link(prev_hash: str, entry: AuditEntry) -> str:
    """What a forger without the key can compute: the chain's formula with no key."""
    return hashlib.sha256(prev_hash.encode() + _encoder.encode(entry)).hexdigest()


async def test_a_forged_tail_entry_with_a_recomputed_hash_fails_verify(
        private: tuple[Services, str], master_key: bytes) -> None:
    """A "record.export" entry forged at the end of a clinic's stream, linked on the true
    last entry, with the stream's head moved to it: ``audit verify`` names it."""
    private_services, private_url = private
    clinic = await make_traffic(private_services)
    rows = await stream_rows(private_services, clinic.account_id)
    last = rows[-1]
    forged = AuditEntry(**{**{f: last[f] for f in AuditEntry.__struct_fields__},
                           "seq": last["seq"] + 1, "action": "record.export",
                           "actor_id": clinic.admin_id, "details": "{}"})
    digest = unkeyed_link(last["entry_hash"], forged)
    await as_attacker(private_services.db, insert(audit_log).values(
        **msgspec.structs.asdict(forged), prev_hash=last["entry_hash"], entry_hash=digest))
    await as_attacker(private_services.db, update(audit_heads)
                      .where(audit_heads.c.stream == clinic.account_id)
                      .values(seq=forged.seq, hash=digest))

    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {clinic.account_id} at seq {forged.seq}" in out
    assert "the entry was altered" in out


async def test_a_rewritten_last_entry_with_a_recomputed_hash_fails_verify(
        private: tuple[Services, str], master_key: bytes) -> None:
    """The last entry edited (outcome ok → denied) with its link and the head recomputed
    without the key: found at that entry."""
    private_services, private_url = private
    clinic = await make_traffic(private_services)
    last = (await stream_rows(private_services, clinic.account_id))[-1]
    edited = AuditEntry(**{**{f: last[f] for f in AuditEntry.__struct_fields__},
                           "outcome": "denied"})
    digest = unkeyed_link(last["prev_hash"], edited)
    await as_attacker(private_services.db, update(audit_log)
                      .where(audit_log.c.id == last["id"])
                      .values(outcome="denied", entry_hash=digest))
    await as_attacker(private_services.db, update(audit_heads)
                      .where(audit_heads.c.stream == clinic.account_id)
                      .values(hash=digest))

    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {clinic.account_id} at seq {last['seq']} (entry id {last['id']})" in out
