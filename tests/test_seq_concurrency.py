"""Per-conversation seqs stay gapless under concurrency: many sends in one process, and two
OS processes sending into one conversation at the same moment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from loadtest import tether
from server.audit import Actor, ChainVerifier
from server.crypto import MasterKey
from server.notify import Offline
from server.protocol import Sender, SendRequest
from server.runtime import Services, build_services
from server.store import audit_log as audit_store
from server.store.tables import conversations, messages
from tests.conftest import CHEAP_HASHING_ENV, Clinic, make_clinic, repo_root, settings_for_tests

HELPER = repo_root() / "tests" / "helpers" / "seq_sender.py"


def cli_env(database_url: str, master_key: bytes) -> dict[str, str]:
    """The environment of a child process: ours without any SECURECHAT_* plus the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")}
    env.update(CHEAP_HASHING_ENV)
    env["SECURECHAT_DATABASE_URL"] = database_url
    env["SECURECHAT_MASTER_KEY"] = base64.b64encode(master_key).decode()
    return env


@contextlib.asynccontextmanager
async def services_on(database_url: str, master_key: bytes) -> AsyncIterator[Services]:
    services = build_services(settings_for_tests(database_url=database_url,
                                                 password_hash_concurrency=2), master_key,
                              notifier=Offline())
    try:
        yield services
    finally:
        await services.db.close()


async def stored_seqs(services: Services, conversation_id: str) -> list[tuple[int, str]]:
    """(seq, client_msg_id) of every stored message of the conversation, in seq order."""
    async with services.db.read() as conn:
        rows = await conn.execute(
            select(messages.c.seq, messages.c.client_msg_id)
            .where(messages.c.conversation_id == conversation_id).order_by(messages.c.seq))
        return [(row.seq, row.client_msg_id) for row in rows]


async def conversation_last_seq(services: Services, conversation_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(conversations.c.last_seq).where(
            conversations.c.id == conversation_id))).scalar_one()


async def check_audit_stream(services: Services, account_id: str, master_key: bytes
                             ) -> list[int]:
    """Verify the account's audit chain (keyed, server/audit.py) and return the seqs its
    message.sent entries name."""
    checker = ChainVerifier(account_id, MasterKey(master_key).audit_key)
    seqs = []
    async with services.db.read() as conn:
        async for row in audit_store.stream_rows(conn, account_id):
            assert checker.feed(row) is None
            if row["action"] == "message.sent":
                seqs.append(json.loads(row["details"])["seq"])
        assert checker.finish((await audit_store.heads(conn))[account_id]) is None
    return sorted(seqs)


async def run_two_senders(database_url: str, master_key: bytes, clinic: Clinic,
                          count: int, in_flight: int) -> list[str]:
    """Start two sender processes, release them together, and return their stdout."""
    procs = []
    try:
        for prefix in ("p1", "p2"):
            procs.append(await asyncio.create_subprocess_exec(
                *tether.command(sys.executable, str(HELPER), clinic.account_id,
                                clinic.conversation_id, clinic.staff_id, prefix, str(count),
                                str(in_flight)),
                pass_fds=tether.pass_fds(), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=cli_env(database_url, master_key), cwd=repo_root()))
        async with asyncio.timeout(60):
            for proc in procs:
                line = await proc.stdout.readline()
                if line != b"READY\n":
                    pytest.fail(f"sender did not start: {line!r} "
                                f"{(await proc.stderr.read()).decode()}")
        for proc in procs:  # both pipes written back to back: the two start together
            proc.stdin.write(b"GO\n")
        async with asyncio.timeout(240):
            results = await asyncio.gather(*(proc.communicate() for proc in procs))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    return [out.decode() for out, _ in results]


async def assert_two_process_outcome(services: Services, clinic: Clinic, count: int,
                                     outputs: list[str], master_key: bytes, *,
                                     interleaved: bool) -> None:
    total = 2 * count
    assert outputs == [f"DONE {count} 0\n"] * 2
    stored = await stored_seqs(services, clinic.conversation_id)
    assert [seq for seq, _ in stored] == list(range(1, total + 1))
    assert {cid for _, cid in stored} == {f"{p}-{i}" for p in ("p1", "p2")
                                          for i in range(count)}
    assert await conversation_last_seq(services, clinic.conversation_id) == total
    assert await check_audit_stream(services, clinic.account_id, master_key) == list(
        range(1, total + 1))
    if interleaved:
        # The processes really overlapped: their messages interleave in seq order. (Not
        # asked of SQLite: its busy-wait lets one process's writes starve the other's.)
        owners = [cid.split("-")[0] for _, cid in stored]
        assert sum(a != b for a, b in itertools.pairwise(owners)) >= 10


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_processes_on_postgresql_get_seqs_1_to_1000(postgresql_url: str,
                                                              master_key: bytes) -> None:
    """Two processes inserting 500 messages each into one conversation on PostgreSQL at
    the same time end with seqs exactly 1..1000."""
    async with services_on(postgresql_url, master_key) as services:
        clinic = await make_clinic(services)
        outputs = await run_two_senders(postgresql_url, master_key, clinic, count=500,
                                        in_flight=4)
        await assert_two_process_outcome(services, clinic, 500, outputs, master_key,
                                         interleaved=True)


@pytest.mark.slow
async def test_two_processes_on_sqlite_get_gapless_seqs(sqlite_url: str,
                                                        master_key: bytes) -> None:
    """Two processes sending into one conversation on one SQLite file get gapless seqs."""
    async with services_on(sqlite_url, master_key) as services:
        clinic = await make_clinic(services)
        outputs = await run_two_senders(sqlite_url, master_key, clinic, count=150,
                                        in_flight=3)
        await assert_two_process_outcome(services, clinic, 150, outputs, master_key,
                                         interleaved=False)


async def test_concurrent_sends_in_one_process_are_gapless(services: Services,
                                                           clinic: Clinic,
                                                           master_key: bytes) -> None:
    """Many sends at once, some of them resends, give the distinct messages seqs 1..N;
    each resend answers with its original's seq and gives its own seq back."""
    distinct = 120
    ids = [f"g-{i}" for i in range(distinct)]
    requests = ids + random.Random(7).sample(ids, 20)
    random.Random(11).shuffle(requests)
    sender, actor = Sender("staff", clinic.staff_id, "Nurse"), Actor("staff", clinic.staff_id)

    results = await asyncio.gather(*(
        services.messaging.send(clinic.account_id, sender, clinic.conversation_id,
                                SendRequest(client_msg_id=cid, body=f"body of {cid}"), actor)
        for cid in requests))

    originals = {r.message.client_msg_id: r.message for r in results if not r.duplicate}
    duplicates = [r.message for r in results if r.duplicate]
    assert len(originals) == distinct
    assert len(duplicates) == 20
    for copy in duplicates:
        assert (copy.id, copy.seq) == (originals[copy.client_msg_id].id,
                                       originals[copy.client_msg_id].seq)
    assert sorted(m.seq for m in originals.values()) == list(range(1, distinct + 1))
    stored = await stored_seqs(services, clinic.conversation_id)
    assert stored == sorted((m.seq, cid) for cid, m in originals.items())
    assert await conversation_last_seq(services, clinic.conversation_id) == distinct
    assert await check_audit_stream(services, clinic.account_id, master_key) == list(
        range(1, distinct + 1))
