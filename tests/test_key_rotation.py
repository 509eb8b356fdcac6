"""Data-key rotation: after `securechat rotate-key` old messages still read and new ones
carry the new key id; running nodes switch within key_refresh_seconds."""

from __future__ import annotations

import re

from sqlalchemy import select

from server.audit import Actor
from server.clock import FakeClock
from server.crypto import envelope_key_id
from server.notify import Offline
from server.protocol import Sender, SendRequest
from server.runtime import Services, build_services
from server.settings import Settings
from server.store import audit_log as audit_store
from server.store.tables import data_keys, messages, patients
from tests.cli import clean_env, run_cli, store_env
from tests.conftest import Clinic


async def run_cli_on(database_url: str, master_key: bytes, *args: str
                     ) -> tuple[int, str, str]:
    return await run_cli(*args, env=store_env(database_url, master_key))


async def send(services: Services, clinic: Clinic, client_msg_id: str, body: str) -> str:
    result = await services.messaging.send(
        clinic.account_id, Sender("staff", clinic.staff_id, "Nurse"), clinic.conversation_id,
        SendRequest(client_msg_id=client_msg_id, body=body, secure=True),
        Actor("staff", clinic.staff_id))
    return result.message.id


async def key_of(services: Services, message_id: str) -> int:
    async with services.db.read() as conn:
        return envelope_key_id((await conn.execute(select(messages.c.body_enc).where(
            messages.c.id == message_id))).scalar_one())


async def newest_key(services: Services, account_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(data_keys.c.id).where(
            data_keys.c.account_id == account_id).order_by(data_keys.c.id.desc()).limit(1))
        ).scalar_one()


async def bodies(services: Services, clinic: Clinic) -> list[str]:
    page = await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                            before_seq=None, limit=50,
                                            actor=Actor("staff", clinic.staff_id))
    return [m.body for m in page.messages]


async def test_cli_rotation_keeps_old_messages_readable(
        services: Services, clinic: Clinic, settings: Settings, master_key: bytes,
        database_url: str, clock: FakeClock) -> None:
    """After `securechat rotate-key` old messages still read and new ones carry the new
    key id (the account's newest data key, as the command printed)."""
    old_key = await newest_key(services, clinic.account_id)
    before = await send(services, clinic, "before", "sealed under the first key")
    assert await key_of(services, before) == old_key

    code, out, err = await run_cli_on(database_url, master_key, "rotate-key")
    assert code == 0, err
    printed = re.search(rf"^account {clinic.account_id}: data key (\d+) is now active$",
                        out, re.MULTILINE)
    assert printed, out
    new_key = int(printed.group(1))
    assert new_key != old_key
    assert new_key == await newest_key(services, clinic.account_id)
    assert re.search(r"^rotated \d+ account\(s\)", out, re.MULTILINE), out

    # A node with nothing cached.
    fresh = build_services(settings, master_key, clock, notifier=Offline())
    try:
        assert await bodies(fresh, clinic) == ["sealed under the first key"]
        after = await send(fresh, clinic, "after", "sealed under the second key")
        assert await key_of(fresh, after) == new_key
        assert await key_of(fresh, before) == old_key
        assert await bodies(fresh, clinic) == ["sealed under the first key",
                                               "sealed under the second key"]
        inbox = await fresh.patients.inbox(clinic.account_id, clinic.staff_id)
        assert [c.patient.display_name for c in inbox] == ["Pat Example"]
    finally:
        await fresh.db.close()

    # The node that was running during the rotation trusts its cached active key for
    # key_refresh_seconds (60), then seals under the new one.
    assert settings.key_refresh_seconds == 60
    clock.advance(seconds=61)
    later = await send(services, clinic, "later", "sealed by the older node")
    assert await key_of(services, later) == new_key
    assert await bodies(services, clinic) == ["sealed under the first key",
                                              "sealed under the second key",
                                              "sealed by the older node"]


async def test_a_running_node_switches_within_the_refresh_interval(
        services: Services, clinic: Clinic, settings: Settings, master_key: bytes,
        clock: FakeClock) -> None:
    """rotate_keys() on one node: it seals under the new key at once; another running node
    keeps the previous (still valid) key until key_refresh_seconds pass, then switches."""
    other = build_services(settings, master_key, clock, notifier=Offline())
    try:
        old_key = await newest_key(services, clinic.account_id)
        assert await key_of(other, await send(other, clinic, "o-1", "one")) == old_key

        rotated = await services.accounts.rotate_keys()
        new_key = rotated[clinic.account_id]
        assert new_key == await newest_key(services, clinic.account_id)
        assert new_key != old_key
        assert await key_of(services, await send(services, clinic, "s-1", "two")) == new_key

        clock.advance(seconds=30)
        assert await key_of(other, await send(other, clinic, "o-2", "three")) == old_key
        clock.advance(seconds=31)
        assert await key_of(other, await send(other, clinic, "o-3", "four")) == new_key

        for node in (services, other):
            assert await bodies(node, clinic) == ["one", "two", "three", "four"]
    finally:
        await other.db.close()

    async with services.db.read() as conn:
        entries = await audit_store.search(conn, clinic.account_id, action="key.rotated")
    assert [e["object_id"] for e in entries] == [str(new_key)]


async def test_every_key_still_opens_after_several_rotations(
        services: Services, clinic: Clinic, clock: FakeClock, settings: Settings,
        master_key: bytes) -> None:
    """Messages and patient fields sealed under each of several keys all still open."""
    keys = [await newest_key(services, clinic.account_id)]
    for i in range(3):
        await send(services, clinic, f"k-{i}", f"message {i}")
        keys.append((await services.accounts.rotate_keys())[clinic.account_id])
        clock.advance(seconds=61)
    assert len(set(keys)) == 4

    fresh = build_services(settings, master_key, clock, notifier=Offline())
    try:
        page = await fresh.messaging.history(clinic.account_id, clinic.conversation_id,
                                             before_seq=None, limit=50,
                                             actor=Actor("staff", clinic.staff_id))
        assert [m.body for m in page.messages] == ["message 0", "message 1", "message 2"]
        assert [await key_of(fresh, m.id) for m in page.messages] == keys[:3]
        async with fresh.db.read() as conn:
            name_enc = (await conn.execute(select(patients.c.name_enc).where(
                patients.c.id == clinic.patient_id))).scalar_one()
        assert envelope_key_id(name_enc) == keys[0]
        inbox = await fresh.patients.inbox(clinic.account_id, clinic.staff_id)
        assert inbox[0].patient.display_name == "Pat Example"
    finally:
        await fresh.db.close()


async def test_rotate_key_needs_the_master_key(database_url: str, master_key: bytes) -> None:
    """`securechat rotate-key` without a master key exits 2 naming the variable."""
    code, _, err = await run_cli("rotate-key", env=clean_env(database_url=database_url))
    assert code == 2
    assert "SECURECHAT_MASTER_KEY" in err
