"""Group commit: sends that arrive together share one transaction, each is answered only
after that transaction committed, one refused send does not fail the others, and a
store failure fails the whole batch with `unavailable` so that a resend stores each
message exactly once. On SQLite and PostgreSQL; the writer itself also without a store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from server import audit
from server.audit import Actor
from server.errors import AppError, ErrorCode
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.services.messaging import Messaging, SendResult
from server.store import audit_log as audit_store
from server.store import sms as sms_store
from server.store.group_commit import GroupCommit
from server.store.tables import audit_heads, conversations, messages
from tests.conftest import Clinic, make_clinic


def staff(clinic: Clinic) -> tuple[Sender, Actor]:
    return Sender("staff", clinic.staff_id, "Nurse"), Actor("staff", clinic.staff_id)


def request(client_msg_id: str, *, secure: bool = True) -> SendRequest:
    return SendRequest(client_msg_id=client_msg_id, body=f"body of {client_msg_id}",
                       secure=secure)


async def outcome(messaging: Messaging, clinic: Clinic, client_msg_id: str, *,
                  conversation_id: str | None = None, secure: bool = True,
                  sender: Sender | None = None) -> SendResult | AppError:
    """The send's result, or the AppError it was refused with."""
    own_sender, actor = staff(clinic)
    try:
        return await messaging.send(clinic.account_id, sender or own_sender,
                                    conversation_id or clinic.conversation_id,
                                    request(client_msg_id, secure=secure), actor)
    except AppError as exc:
        return exc


@contextlib.contextmanager
def counting_commits(services: Services):
    """Counts the write transactions committed on the store while the block runs."""
    commits: list[int] = []

    def on_commit(_conn) -> None:
        commits.append(1)

    engine = services.db.write_engine.sync_engine
    event.listen(engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(engine, "commit", on_commit)


async def stored(services: Services, conversation_id: str) -> list[tuple[int, str]]:
    async with services.db.read() as conn:
        rows = await conn.execute(select(messages.c.seq, messages.c.client_msg_id)
                                  .where(messages.c.conversation_id == conversation_id)
                                  .order_by(messages.c.seq))
        return [(row.seq, row.client_msg_id) for row in rows]


async def chain_holds(services: Services, *streams: str) -> None:
    async with services.db.read() as conn:
        results = [r async for r in audit.verify(conn, services.keyring.master.audit_key)]
    broken = [r for r in results if isinstance(r, audit.ChainBreak) and r.stream in streams]
    assert broken == []
    assert set(streams) <= {r for r in results if isinstance(r, str)}


async def test_sends_arriving_together_share_one_transaction(services: Services,
                                                             clinic: Clinic) -> None:
    """Twenty sends issued at once, to two conversations of two accounts, are stored by
    one transaction; each is answered only after it committed (its message is then
    visible to any other connection), and published in seq order before any answer."""
    other = await make_clinic(services, phone="+14155550131")
    published: list[tuple[str, int]] = []
    visible_on_answer: list[bool] = []

    async def one(target: Clinic, cid: str) -> SendResult:
        sender, actor = staff(target)
        result = await services.messaging.send(
            target.account_id, sender, target.conversation_id, request(cid), actor,
            on_stored=lambda r: published.append((r.message.conversation_id,
                                                  r.message.seq)))
        visible_on_answer.append(
            (result.message.seq, cid) in await stored(services, target.conversation_id))
        return result

    before = services.messaging.writer.transactions
    with counting_commits(services) as commits:
        results = await asyncio.gather(*(one(clinic if i % 2 else other, f"t-{i}")
                                          for i in range(20)))
    assert services.messaging.writer.transactions - before == 1
    assert len(commits) == 1
    assert all(visible_on_answer) and len(visible_on_answer) == 20
    assert sorted(r.message.seq for r in results if r.message.conversation_id
                  == clinic.conversation_id) == list(range(1, 11))
    assert [seq for convo, seq in published if convo == clinic.conversation_id] == list(
        range(1, 11))
    assert [seq for convo, seq in published if convo == other.conversation_id] == list(
        range(1, 11))
    await chain_holds(services, clinic.account_id, other.account_id)


async def test_a_refused_send_does_not_fail_the_rest_of_its_batch(services: Services,
                                                                   clinic: Clinic) -> None:
    """One batch holding an SMS to an opted-out patient, Secure Chat with the portal off,
    an unknown conversation, a resend, a client_msg_id of another sender and good sends:
    each gets its own answer, the good ones are stored with gapless seqs."""
    portal_off = await make_clinic(services, portal_active=False, phone="+14155550132")
    stopped = await make_clinic(services, phone="+14155550133")
    async with services.db.write() as conn:
        await sms_store.set_opted_out(conn, stopped.patient_id, True, services.clock.now())
    first = await outcome(services.messaging, clinic, "resent")
    assert isinstance(first, SendResult)
    admin = Sender("staff", clinic.admin_id, "Admin")

    before = services.messaging.writer.transactions
    answers = await asyncio.gather(
        outcome(services.messaging, clinic, "good-1"),
        outcome(services.messaging, stopped, "sms-1", secure=False),
        outcome(services.messaging, portal_off, "secure-1"),
        outcome(services.messaging, clinic, "nowhere", conversation_id=stopped.conversation_id),
        outcome(services.messaging, clinic, "resent"),
        outcome(services.messaging, clinic, "resent", sender=admin),
        outcome(services.messaging, clinic, "good-2", secure=False),
        outcome(services.messaging, stopped, "secure-ok"),
        outcome(services.messaging, portal_off, "sms-ok", secure=False),
    )
    assert services.messaging.writer.transactions - before == 1
    codes = [a.code if isinstance(a, AppError) else None for a in answers]
    assert codes == [None, ErrorCode.OPTED_OUT, ErrorCode.PORTAL_INACTIVE,
                     ErrorCode.NOT_FOUND, None, ErrorCode.CONFLICT, None, None, None]
    assert answers[4].duplicate and answers[4].message.id == first.message.id
    assert await stored(services, clinic.conversation_id) == [
        (1, "resent"), (2, "good-1"), (3, "good-2")]
    assert await stored(services, stopped.conversation_id) == [(1, "secure-ok")]
    assert await stored(services, portal_off.conversation_id) == [(1, "sms-ok")]
    await chain_holds(services, clinic.account_id, stopped.account_id,
                      portal_off.account_id)


async def test_a_client_msg_id_twice_in_one_batch_is_stored_once(services: Services,
                                                                  clinic: Clinic) -> None:
    """The same client_msg_id twice in one batch: stored once, the copy answers with the
    original; a third copy from another sender is a conflict; a later resend (another
    batch) still gets the original."""
    admin = Sender("staff", clinic.admin_id, "Admin")
    a, b, c = await asyncio.gather(
        outcome(services.messaging, clinic, "twice"),
        outcome(services.messaging, clinic, "twice"),
        outcome(services.messaging, clinic, "twice", sender=admin))
    assert isinstance(a, SendResult) and isinstance(b, SendResult)
    assert (a.duplicate, b.duplicate) == (False, True)
    assert (b.message.id, b.message.seq) == (a.message.id, 1)
    assert isinstance(c, AppError) and c.code == ErrorCode.CONFLICT
    later = await outcome(services.messaging, clinic, "twice")
    assert later.duplicate and later.message.id == a.message.id
    assert await stored(services, clinic.conversation_id) == [(1, "twice")]


class FailingCommits:
    """The real database, except that the next ``failures`` write transactions fail at
    commit (as a lost connection or a full disk would) and roll back."""

    def __init__(self, services: Services, failures: int) -> None:
        self._db = services.db
        self.failures = failures

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator:
        async with self._db.write() as conn:
            yield conn
            if self.failures:
                self.failures -= 1
                raise OperationalError("COMMIT", None, OSError("simulated disk failure"))

    def read(self):
        return self._db.read()


async def test_a_store_failure_fails_the_batch_and_a_resend_stores_each_once(
        services: Services, clinic: Clinic) -> None:
    """When the batch's transaction fails, every send of it gets `unavailable` and
    nothing is stored or published; resending the same client_msg_ids stores each
    message exactly once, with gapless seqs and a valid audit chain."""
    flaky = FailingCommits(services, failures=1)
    messaging = Messaging(flaky, services.keyring, services.clock,  # type: ignore[arg-type]
                          services.sms_outbox, services.link_mint)
    published: list[int] = []
    sender, actor = staff(clinic)

    async def send(cid: str) -> SendResult | AppError:
        try:
            return await messaging.send(clinic.account_id, sender, clinic.conversation_id,
                                        request(cid), actor,
                                        on_stored=lambda r: published.append(r.message.seq))
        except AppError as exc:
            return exc

    ids = [f"f-{i}" for i in range(8)]
    failed = await asyncio.gather(*(send(cid) for cid in ids))
    assert [getattr(a, "code", None) for a in failed] == [ErrorCode.UNAVAILABLE] * 8
    assert await stored(services, clinic.conversation_id) == []
    assert published == []

    again = await asyncio.gather(*(send(cid) for cid in ids + ids[:3]))
    assert all(isinstance(a, SendResult) for a in again)
    assert sorted(a.message.seq for a in again if not a.duplicate) == list(range(1, 9))
    assert sum(a.duplicate for a in again) == 3
    assert sorted(await stored(services, clinic.conversation_id)) == sorted(
        (a.message.seq, a.message.client_msg_id) for a in again if not a.duplicate)
    assert published == list(range(1, 9))
    await chain_holds(services, clinic.account_id)


async def test_a_constraint_failure_is_confined_to_its_send(services: Services,
                                                            clinic: Clinic) -> None:
    """A constraint the batch could not foresee (here: an audit head moved back, as if
    another writer had raced it) rolls the batch back; its sends are retried one per
    transaction, so only the send that hits the constraint fails."""
    other = await make_clinic(services, phone="+14155550134")
    async with services.db.read() as conn:
        head = (await audit_store.heads(conn))[clinic.account_id]
    async with services.db.write() as conn:
        await conn.execute(update(audit_heads).where(audit_heads.c.stream == clinic.account_id)
                           .values(seq=head[0] - 1))
    try:
        bad, good = await asyncio.gather(outcome(services.messaging, clinic, "c-1"),
                                         outcome(services.messaging, other, "c-2"),
                                         return_exceptions=True)
    finally:
        async with services.db.write() as conn:
            await conn.execute(update(audit_heads)
                               .where(audit_heads.c.stream == clinic.account_id)
                               .values(seq=head[0], hash=head[1]))
    assert isinstance(bad, DBAPIError)
    assert isinstance(good, SendResult) and good.message.seq == 1
    assert await stored(services, clinic.conversation_id) == []
    async with services.db.read() as conn:
        assert (await conn.execute(select(conversations.c.last_seq).where(
            conversations.c.id == clinic.conversation_id))).scalar_one() == 0
    await chain_holds(services, clinic.account_id, other.account_id)


async def test_the_audit_chains_hold_after_a_burst(services: Services) -> None:
    """300 sends over three accounts at once, in several batches: every account's chain
    verifies and names every message once."""
    clinics = [await make_clinic(services, phone=f"+1415555014{i}") for i in range(3)]
    results = await asyncio.gather(*(outcome(services.messaging, clinics[i % 3], f"b-{i}",
                                             secure=bool(i % 2))
                                     for i in range(300)))
    assert all(isinstance(r, SendResult) and not r.duplicate for r in results)
    for clinic in clinics:
        assert [seq for seq, _ in await stored(services, clinic.conversation_id)] == list(
            range(1, 101))
    await chain_holds(services, *(c.account_id for c in clinics))


# --- the writer alone ---------------------------------------------------------------------

class HeldStore:
    """A store whose transactions wait until the test lets them finish."""

    def __init__(self) -> None:
        self.began = asyncio.Event()
        self.release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        self.began.set()
        await self.release.wait()
        yield None


async def test_a_full_queue_refuses_with_unavailable_and_loses_nothing() -> None:
    """While a batch is being written, at most `max_pending` sends wait; the next is
    refused at once with `unavailable`, and every accepted one is answered."""
    store = HeldStore()
    batches: list[list[int]] = []

    async def run(_conn, items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    writer: GroupCommit[int, int] = GroupCommit(store, run, max_pending=2)  # type: ignore[arg-type]
    first = asyncio.ensure_future(writer.submit(1))
    await store.began.wait()  # the writer took item 1 and is inside its transaction
    waiting = [asyncio.ensure_future(writer.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)  # one loop turn: both ready tasks run up to their wait
    assert writer.pending == 2
    with pytest.raises(AppError) as caught:
        await writer.submit(4)
    assert caught.value.code == ErrorCode.UNAVAILABLE
    store.release.set()
    assert await asyncio.gather(first, *waiting) == [10, 20, 30]
    assert batches == [[1], [2, 3]]
    assert (writer.transactions, writer.items, writer.pending) == (2, 3, 0)
