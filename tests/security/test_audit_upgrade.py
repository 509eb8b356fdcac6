"""Upgrading a store written before the audit chain was keyed (server/audit_upgrade.py).

An operator's existing, honestly written history must keep verifying: the first start of
the keyed build anchors each stream's unkeyed chain with a keyed entry, after which the
unkeyed prefix verifies only as it was, and nothing unkeyed may follow. The old build is
reproduced by writing real traffic with the pre-MAC link (``legacy_entry_hash``). Each
test has a private database on both backends (some are left tampered with).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from sqlalchemy import insert, update

from server import audit
from server.app import create_app
from server.audit import SYSTEM_STREAM, AuditEntry, entry_hash, legacy_entry_hash
from server.audit_upgrade import ANCHOR_ACTION, MARKER_ACTION, anchor_legacy
from server.clock import FakeClock
from server.crypto import MasterKey
from server.runtime import Services
from server.store import audit_log as audit_store
from server.store.tables import audit_heads, audit_log
from tests.conftest import Clinic, make_clinic, settings_for_tests
from tests.serving import serve_app
from tests.test_audit_store import (  # noqa: F401 - private_url/private_services are fixtures
    as_attacker,
    audit_verify,
    make_traffic,
    private_services,
    private_url,
    stream_rows,
)


@pytest.fixture
async def legacy(private_services: Services,  # noqa: F811
                 monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[Clinic]:
    """A working day's traffic written as the build before the audit key wrote it."""
    with monkeypatch.context() as patched:
        patched.setattr(audit, "entry_hash",
                        lambda prev_hash, entry, key: legacy_entry_hash(prev_hash, entry))
        clinic = await make_traffic(private_services)
    yield clinic


async def start_nodes(url: str, master_key: bytes, clock: FakeClock, count: int = 1) -> None:
    """Start ``count`` nodes of this build on the store at once (their lifespans run the
    upgrade concurrently), then stop them."""
    settings = settings_for_tests(database_url=url, password_hash_concurrency=2)
    apps = [create_app(settings, master_key, clock=clock) for _ in range(count)]

    async def run(app) -> None:
        async with serve_app(app):
            pass

    await asyncio.gather(*(run(app) for app in apps))


async def actions(services: Services, stream: str, action: str) -> list[dict]:
    async with services.db.read() as conn:
        return [dict(row) for row in await audit_store.with_action(conn, stream, action)]


def forged_after(last: dict, *, action: str = "record.export", details: str = "{}"
                 ) -> AuditEntry:
    """An entry chained on ``last``, as someone writing the database would add it."""
    return AuditEntry(**{**{f: last[f] for f in AuditEntry.__struct_fields__},
                         "seq": last["seq"] + 1, "action": action, "details": details})


async def append_forged(services: Services, entry: AuditEntry, prev_hash: str,
                        digest: str) -> None:
    await as_attacker(services.db, insert(audit_log).values(
        **msgspec.structs.asdict(entry), prev_hash=prev_hash, entry_hash=digest))
    await as_attacker(services.db, update(audit_heads)
                      .where(audit_heads.c.stream == entry.stream)
                      .values(seq=entry.seq, hash=digest))


# --- the upgrade ----------------------------------------------------------------------

async def test_a_legacy_store_verifies_once_two_nodes_start_on_it(
        legacy: Clinic, private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """Before the keyed build has run, the unkeyed history is not vouched for; two nodes
    starting at once anchor each stream exactly once, and then all of it verifies."""
    clinic = legacy
    before = await stream_rows(private_services, clinic.account_id)
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {clinic.account_id} at seq 1 (entry id {before[0]['id']})" in out
    assert "no keyed entry anchors them" in out

    await start_nodes(private_url, master_key, clock, count=2)

    code, out = await audit_verify(private_url, master_key)
    assert code == 0, out
    assert f"ok   stream {clinic.account_id}" in out
    assert f"ok   stream {SYSTEM_STREAM}" in out
    for stream in (clinic.account_id, SYSTEM_STREAM):
        rows = await stream_rows(private_services, stream)
        anchors = [row for row in rows if row["action"] == ANCHOR_ACTION]
        assert len(anchors) == 1, stream
        (anchor,) = anchors
        legacy_tail = rows[anchor["seq"] - 2]
        assert all(row["action"] != ANCHOR_ACTION for row in rows[:anchor["seq"] - 1])
        assert anchor["prev_hash"] == legacy_tail["entry_hash"]
        assert msgspec.json.decode(anchor["details"]) == {
            "legacy_hash": legacy_tail["entry_hash"], "legacy_seq": legacy_tail["seq"]}
    markers = await actions(private_services, SYSTEM_STREAM, MARKER_ACTION)
    assert len(markers) == 1
    assert msgspec.json.decode(markers[0]["details"]) == {"anchored": 2, "unverified": 0}

    # Keyed traffic carries on after the anchor, and the next start adds nothing.
    await make_traffic(private_services)
    await start_nodes(private_url, master_key, clock)
    assert len(await actions(private_services, SYSTEM_STREAM, MARKER_ACTION)) == 1
    code, out = await audit_verify(private_url, master_key)
    assert code == 0, out


async def test_a_fresh_store_needs_no_anchor(
        private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """A store the keyed build wrote from the start gets no anchor, only the one-time
    marker, and verifies."""
    clinic = await make_traffic(private_services)
    await start_nodes(private_url, master_key, clock)
    for stream in (clinic.account_id, SYSTEM_STREAM):
        assert await actions(private_services, stream, ANCHOR_ACTION) == []
    (marker,) = await actions(private_services, SYSTEM_STREAM, MARKER_ACTION)
    assert msgspec.json.decode(marker["details"]) == {"anchored": 0, "unverified": 0}
    code, out = await audit_verify(private_url, master_key)
    assert code == 0, out


# --- what an attacker without the key cannot do afterwards ---------------------------------

async def test_an_unkeyed_entry_forged_after_the_anchor_fails(
        legacy: Clinic, private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """An entry appended at the tail with the old, unkeyed link (and the head moved to
    it) is refused: nothing unkeyed may follow a keyed entry."""
    await start_nodes(private_url, master_key, clock)
    last = (await stream_rows(private_services, legacy.account_id))[-1]
    forged = forged_after(last)
    await append_forged(private_services, forged, last["entry_hash"],
                        legacy_entry_hash(last["entry_hash"], forged))

    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {legacy.account_id} at seq {forged.seq}" in out
    assert "its link is unkeyed, after keyed ones" in out


async def test_a_rewritten_legacy_entry_with_every_later_hash_recomputed_fails(
        legacy: Clinic, private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """An unkeyed entry edited after the upgrade, its link and every later unkeyed link
    recomputed (the anchor's prev_hash and the head too): the chain no longer leads to
    the anchored hash, and the anchor's MAC says so."""
    await start_nodes(private_url, master_key, clock)
    rows = await stream_rows(private_services, legacy.account_id)
    (anchor,) = [row for row in rows if row["action"] == ANCHOR_ACTION]
    unkeyed = rows[:anchor["seq"] - 1]
    target = 1  # the second entry: a sign-in, say, turned into a denied one
    prev = unkeyed[target - 1]["entry_hash"]
    for position, row in enumerate(unkeyed[target:], start=target):
        entry = AuditEntry(**{f: row[f] for f in AuditEntry.__struct_fields__})
        if position == target:
            entry = msgspec.structs.replace(entry, outcome="denied")
        digest = legacy_entry_hash(prev, entry)
        await as_attacker(private_services.db, update(audit_log)
                          .where(audit_log.c.id == row["id"])
                          .values(outcome=entry.outcome, prev_hash=prev, entry_hash=digest))
        prev = digest
    await as_attacker(private_services.db, update(audit_log)
                      .where(audit_log.c.id == anchor["id"]).values(prev_hash=prev))

    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert (f"stream {legacy.account_id} at seq {anchor['seq']} "
            f"(entry id {anchor['id']}): the entry was altered") in out


async def test_a_forged_anchor_fails_and_is_not_replaced(
        legacy: Clinic, private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """An anchor written before the upgrade by someone without the key (its MAC made
    with another key) fails verify; the upgrade does not vouch for that stream."""
    last = (await stream_rows(private_services, legacy.account_id))[-1]
    anchor = forged_after(last, action=ANCHOR_ACTION, details=msgspec.json.encode(
        {"legacy_hash": last["entry_hash"], "legacy_seq": last["seq"]}).decode())
    await append_forged(private_services, anchor, last["entry_hash"],
                        entry_hash(last["entry_hash"], anchor, b"k" * 32))

    await start_nodes(private_url, master_key, clock)

    assert len(await actions(private_services, legacy.account_id, ANCHOR_ACTION)) == 1
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {legacy.account_id} at seq {anchor.seq}" in out
    assert "not made with this master key" in out
    assert f"ok   stream {SYSTEM_STREAM}" in out  # the honest stream was anchored


async def test_unkeyed_entries_planted_after_the_upgrade_are_never_anchored(
        private_services: Services, private_url: str,  # noqa: F811
        master_key: bytes, clock: FakeClock) -> None:
    """The upgrade runs once per store: a stream of unkeyed entries planted after it
    (here a clinic's whole stream relinked the old way) is not vouched for by the next
    start, and fails verify. (Were the upgrade to run at every start, it would sign
    whatever unkeyed stream it found.)"""
    await start_nodes(private_url, master_key, clock)
    planted = await make_clinic(private_services, phone="+14155550123")
    rows = await stream_rows(private_services, planted.account_id)
    prev = "0" * 64
    for row in rows:  # the whole stream rewritten as the old build would have linked it
        entry = AuditEntry(**{f: row[f] for f in AuditEntry.__struct_fields__})
        digest = legacy_entry_hash(prev, entry)
        await as_attacker(private_services.db, update(audit_log)
                          .where(audit_log.c.id == row["id"])
                          .values(prev_hash=prev, entry_hash=digest))
        prev = digest
    await as_attacker(private_services.db, update(audit_heads)
                      .where(audit_heads.c.stream == planted.account_id).values(hash=prev))
    await start_nodes(private_url, master_key, clock)

    assert await actions(private_services, planted.account_id, ANCHOR_ACTION) == []
    code, out = await audit_verify(private_url, master_key)
    assert code == 1, out
    assert f"stream {planted.account_id} at seq 1" in out
    assert "no keyed entry anchors them" in out


async def test_the_upgrade_is_a_no_op_once_done(
        legacy: Clinic, private_services: Services, master_key: bytes,  # noqa: F811
        clock: FakeClock) -> None:
    """Called again (another node, a restart), it reports nothing done."""
    key = MasterKey(master_key).audit_key
    first = await anchor_legacy(private_services.db, clock, key)
    assert first is not None
    assert set(first.anchored) == {legacy.account_id, SYSTEM_STREAM}
    assert first.refused == []
    assert await anchor_legacy(private_services.db, clock, key) is None
