"""Subscribe audit entries arriving together share one write transaction
(server/services/audit_batch.py), and each still joins its account's hash chain."""

from __future__ import annotations

import asyncio

from server.audit import Actor, ChainVerifier
from server.clock import FakeClock
from server.crypto import MasterKey
from server.runtime import Services
from server.services.audit_batch import AuditBatcher
from server.store import audit_log as audit_store
from tests.conftest import make_clinic


async def _check_chain(services: Services, stream: str, master_key: bytes) -> list[dict]:
    async with services.db.read() as conn:
        heads = await audit_store.heads(conn)
        rows = [dict(row) async for row in audit_store.stream_rows(conn, stream)]
    checker = ChainVerifier(stream, MasterKey(master_key).audit_key)
    for row in rows:
        assert checker.feed(row) is None
    assert checker.finish(heads.get(stream)) is None
    return rows


async def test_entries_arriving_together_commit_once_each_in_its_chain(
        services: Services, clock: FakeClock, master_key: bytes) -> None:
    one, two = await make_clinic(services), await make_clinic(services)
    batcher = AuditBatcher(services.db, clock)
    actor = Actor("staff", "someone", "127.0.0.1")
    await asyncio.gather(*(
        batcher.append(stream=clinic.account_id, actor=actor,
                       action="conversation.subscribed", object_type="conversation",
                       object_id=clinic.conversation_id, details={"after_seq": i})
        for i in range(10) for clinic in (one, two)))
    assert batcher.transactions == 1
    for clinic in (one, two):
        rows = await _check_chain(services, clinic.account_id, master_key)
        subscribed = [row for row in rows if row["action"] == "conversation.subscribed"]
        assert [row["details"] for row in subscribed] == \
            [f'{{"after_seq":{i}}}' for i in range(10)]


async def test_a_batch_is_bounded_and_later_entries_take_the_next(
        services: Services, clock: FakeClock, master_key: bytes) -> None:
    clinic = await make_clinic(services)
    batcher = AuditBatcher(services.db, clock, max_batch=4)
    await asyncio.gather(*(
        batcher.append(stream=clinic.account_id, actor=Actor("patient", "p"),
                       action="conversation.subscribed", object_id=str(i))
        for i in range(10)))
    assert batcher.transactions == 3
    await batcher.flush()
    rows = await _check_chain(services, clinic.account_id, master_key)
    assert [row["object_id"] for row in rows
            if row["action"] == "conversation.subscribed"] == [str(i) for i in range(10)]


class _Broken:
    """A database whose write transactions fail."""

    def write(self):
        raise OSError("the store is down")


async def test_a_failed_transaction_fails_every_caller_of_its_batch(clock: FakeClock
                                                                    ) -> None:
    batcher = AuditBatcher(_Broken(), clock)  # type: ignore[arg-type]
    results = await asyncio.gather(*(
        batcher.append(stream="a", actor=Actor("staff", "s"), action="x") for _ in range(3)),
        return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
    assert batcher.transactions == 0
    await batcher.flush()  # nothing left waiting
