"""Messaging: idempotent sends, per-conversation seqs, tenancy, channels, history pages and
their audit entries, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from server.audit import Actor
from server.errors import AppError, ErrorCode
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.store import audit_log as audit_store
from server.store.tables import conversations, messages
from tests.conftest import Clinic, make_clinic


def staff_sender(clinic: Clinic) -> Sender:
    return Sender("staff", clinic.staff_id, "Nurse")


def staff_actor(clinic: Clinic) -> Actor:
    return Actor("staff", clinic.staff_id)


async def send(services: Services, clinic: Clinic, client_msg_id: str, body: str = "hello",
               *, secure: bool = True, sender: Sender | None = None):
    return await services.messaging.send(
        clinic.account_id, sender or staff_sender(clinic), clinic.conversation_id,
        SendRequest(client_msg_id=client_msg_id, body=body, secure=secure),
        staff_actor(clinic))


async def stored_rows(services: Services, conversation_id: str) -> list:
    async with services.db.read() as conn:
        return list((await conn.execute(
            select(messages).where(messages.c.conversation_id == conversation_id)
            .order_by(messages.c.seq))).mappings().all())


async def last_seq(services: Services, conversation_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(conversations.c.last_seq).where(
            conversations.c.id == conversation_id))).scalar_one()


async def audit_entries(services: Services, account_id: str, action: str) -> list:
    async with services.db.read() as conn:
        return await audit_store.search(conn, account_id, action=action, limit=1000)


async def test_seqs_count_up_from_one_per_conversation(services: Services,
                                                       clinic: Clinic) -> None:
    """Each conversation numbers its messages 1, 2, 3... independently of the others."""
    other = await make_clinic(services, phone="+14155550101")
    first = [(await send(services, clinic, f"a-{i}")).message.seq for i in range(3)]
    second = [(await send(services, other, f"a-{i}")).message.seq for i in range(2)]
    assert first == [1, 2, 3]
    assert second == [1, 2]
    assert [r["seq"] for r in await stored_rows(services, clinic.conversation_id)] == [1, 2, 3]
    assert await last_seq(services, clinic.conversation_id) == 3


async def test_resending_a_client_msg_id_returns_the_original(services: Services,
                                                              clinic: Clinic) -> None:
    """The same client_msg_id again answers with the stored message and stores nothing."""
    original = await send(services, clinic, "dup-1", "first words")
    again = await send(services, clinic, "dup-1", "first words")
    assert original.duplicate is False
    assert again.duplicate is True
    assert (again.message.id, again.message.seq) == (original.message.id, original.message.seq)
    assert again.message.body == "first words"
    rows = await stored_rows(services, clinic.conversation_id)
    assert [(r["id"], r["seq"]) for r in rows] == [(original.message.id, 1)]
    assert len(await audit_entries(services, clinic.account_id, "message.sent")) == 1
    # The rolled-back duplicate gave its seq back: the next message is 2, not 3.
    assert (await send(services, clinic, "dup-2")).message.seq == 2
    assert await last_seq(services, clinic.conversation_id) == 2


async def test_a_client_msg_id_of_another_sender_is_a_conflict(services: Services,
                                                               clinic: Clinic) -> None:
    """A client_msg_id already used by another sender is refused with `conflict`."""
    await send(services, clinic, "shared-id")
    admin = Sender("staff", clinic.admin_id, "Admin")
    with pytest.raises(AppError) as caught:
        await send(services, clinic, "shared-id", sender=admin)
    assert caught.value.code == ErrorCode.CONFLICT
    assert len(await stored_rows(services, clinic.conversation_id)) == 1
    assert (await send(services, clinic, "next")).message.seq == 2


async def test_a_conversation_of_another_account_is_not_found(services: Services,
                                                              clinic: Clinic) -> None:
    """Sending to, or reading, a conversation of another account answers `not_found`."""
    other = await make_clinic(services, phone="+14155550102")
    with pytest.raises(AppError) as caught:
        await services.messaging.send(
            clinic.account_id, staff_sender(clinic), other.conversation_id,
            SendRequest(client_msg_id="x-1", body="wrong tenant", secure=False),
            staff_actor(clinic))
    assert caught.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(AppError) as caught:
        await services.messaging.history(clinic.account_id, other.conversation_id,
                                         before_seq=None, limit=50, actor=staff_actor(clinic))
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert await stored_rows(services, other.conversation_id) == []
    assert await last_seq(services, other.conversation_id) == 0


async def test_secure_with_the_portal_off_stores_nothing(services: Services) -> None:
    """Secure Chat while the portal is off is `portal_inactive`, and consumes no seq."""
    clinic = await make_clinic(services, portal_active=False)
    with pytest.raises(AppError) as caught:
        await send(services, clinic, "s-1", secure=True)
    assert caught.value.code == ErrorCode.PORTAL_INACTIVE
    assert await stored_rows(services, clinic.conversation_id) == []
    assert await last_seq(services, clinic.conversation_id) == 0
    assert await audit_entries(services, clinic.account_id, "message.sent") == []
    sms = await send(services, clinic, "s-2", secure=False)
    assert sms.message.seq == 1


async def test_secure_to_a_patient_from_an_unknown_number_is_refused(
        services: Services, clinic: Clinic) -> None:
    """A patient made for an SMS from an unknown number has no date of birth to verify
    with: a secure message to them is refused (`invalid_request`) and stores nothing; an
    SMS to them still goes."""
    _, conversation_id, _ = await services.patients.for_phone(
        clinic.account_id, "+14155550177", "Unknown sender")
    unknown = Clinic(**{**vars(clinic), "conversation_id": conversation_id})
    with pytest.raises(AppError) as caught:
        await send(services, unknown, "u-1", secure=True)
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert "unknown number" in caught.value.message
    assert await stored_rows(services, conversation_id) == []
    assert await last_seq(services, conversation_id) == 0
    assert (await send(services, unknown, "u-2", secure=False)).message.seq == 1


async def test_sms_is_queued_and_secure_is_sent(services: Services, clinic: Clinic) -> None:
    """An SMS is stored on channel `sms` with status `queued`; Secure Chat as `sent`."""
    sms = await send(services, clinic, "c-1", secure=False)
    secure = await send(services, clinic, "c-2", secure=True)
    assert (sms.message.channel, sms.message.status) == ("sms", "queued")
    assert (secure.message.channel, secure.message.status) == ("secure", "sent")
    rows = await stored_rows(services, clinic.conversation_id)
    assert [(r["channel"], r["status"], r["direction"]) for r in rows] == [
        ("sms", "queued", "outbound"), ("secure", "sent", "outbound")]


async def test_a_patient_message_is_inbound_and_secure(services: Services,
                                                       clinic: Clinic) -> None:
    """A patient's message is always inbound Secure Chat, even when `secure` is false."""
    patient = Sender("patient", clinic.patient_id, "Pat")
    result = await send(services, clinic, "p-1", secure=False, sender=patient)
    assert (result.message.direction, result.message.channel) == ("inbound", "secure")


async def test_a_blank_body_is_refused(services: Services, clinic: Clinic) -> None:
    """A body of only whitespace is `invalid_request` and stores nothing."""
    with pytest.raises(AppError) as caught:
        await send(services, clinic, "b-1", "   \n ")
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert await last_seq(services, clinic.conversation_id) == 0


async def test_history_pages_oldest_first(services: Services, clinic: Clinic) -> None:
    """History pages run oldest first; before_seq/limit walk back and has_more says when
    older messages remain."""
    for i in range(1, 8):
        await send(services, clinic, f"h-{i}", f"body {i}")
    history = services.messaging.history

    newest = await history(clinic.account_id, clinic.conversation_id, before_seq=None,
                           limit=3, actor=staff_actor(clinic))
    assert [m.seq for m in newest.messages] == [5, 6, 7]
    assert [m.body for m in newest.messages] == ["body 5", "body 6", "body 7"]
    assert newest.has_more is True

    middle = await history(clinic.account_id, clinic.conversation_id, before_seq=5,
                           limit=3, actor=staff_actor(clinic))
    assert [m.seq for m in middle.messages] == [2, 3, 4]
    assert middle.has_more is True

    oldest = await history(clinic.account_id, clinic.conversation_id, before_seq=2,
                           limit=3, actor=staff_actor(clinic))
    assert [m.seq for m in oldest.messages] == [1]
    assert oldest.has_more is False

    exact = await history(clinic.account_id, clinic.conversation_id, before_seq=None,
                          limit=7, actor=staff_actor(clinic))
    assert [m.seq for m in exact.messages] == list(range(1, 8))
    assert exact.has_more is False
    tag = clinic.staff_email.removeprefix("staff-").split("@")[0]
    assert {(m.sender.id, m.sender.name) for m in exact.messages} == {
        (clinic.staff_id, f"Nurse {tag}")}


@pytest.mark.parametrize(("before_seq", "limit"), [(None, 0), (None, 201), (0, 10)])
async def test_history_refuses_bad_paging(services: Services, clinic: Clinic,
                                          before_seq: int | None, limit: int) -> None:
    """A limit outside 1..200 or a before_seq below 1 is `invalid_request`."""
    with pytest.raises(AppError) as caught:
        await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                         before_seq=before_seq, limit=limit,
                                         actor=staff_actor(clinic))
    assert caught.value.code == ErrorCode.INVALID_REQUEST


async def test_sends_and_reads_are_audited_without_phi(services: Services,
                                                       clinic: Clinic) -> None:
    """Every send writes `message.sent` and every history read `conversation.history_read`,
    naming ids and counts only: no body, name or phone in the details."""
    body = "Your biopsy result: benign (PHI-MARKER-7731)"
    sent = [await send(services, clinic, f"au-{i}", body) for i in range(2)]
    await send(services, clinic, "au-0", body)  # a duplicate: no second entry
    await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                     before_seq=None, limit=50, actor=staff_actor(clinic))
    await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                     before_seq=2, limit=1, actor=staff_actor(clinic))

    sent_entries = await audit_entries(services, clinic.account_id, "message.sent")
    assert sorted(e["object_id"] for e in sent_entries) == sorted(r.message.id for r in sent)
    for entry in sent_entries:
        assert entry["actor_kind"] == "staff" and entry["actor_id"] == clinic.staff_id
        details = json.loads(entry["details"])
        assert set(details) == {"conversation_id", "seq", "channel"}
        assert details["conversation_id"] == clinic.conversation_id

    reads = await audit_entries(services, clinic.account_id, "conversation.history_read")
    assert [json.loads(e["details"]) for e in reversed(reads)] == [
        {"count": 2, "before_seq": None}, {"count": 1, "before_seq": 2}]
    assert {e["object_id"] for e in reads} == {clinic.conversation_id}

    async with services.db.read() as conn:
        every = await audit_store.search(conn, clinic.account_id, limit=1000)
    text = json.dumps([dict(e) for e in every], default=str)
    for phi in ("PHI-MARKER-7731", "biopsy", "Pat Example", "4155550100", "1980-05-17"):
        assert phi not in text


async def test_duplicates_do_not_count_as_rows(services: Services, clinic: Clinic) -> None:
    """After many resends the table holds one row per distinct client_msg_id."""
    for _ in range(3):
        for i in range(4):
            await send(services, clinic, f"r-{i}")
    async with services.db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(messages).where(
            messages.c.conversation_id == clinic.conversation_id))).scalar_one()
    assert count == 4
    assert await last_seq(services, clinic.conversation_id) == 4
