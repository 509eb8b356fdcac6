"""A message body is bound to its channel, direction and seq (issue 13): a row relabelled
in the database (a secure message turned into an SMS, an outbound one made inbound, or
moved in the thread) fails its integrity check on read and is audited, instead of being
shown as what it now claims to be. Bodies sealed before the change (envelope version 1,
bound to their row and sender only) still read.

Before the fix the associated data named the row and sender only: a relabelled row
opened as if nothing had happened.
"""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update

from server import crypto
from server.audit import Actor
from server.errors import ErrorCode
from server.protocol import Sender, SendRequest
from server.runtime import Services
from server.store.tables import messages
from tests.conftest import Clinic
from tests.test_encryption_at_rest import (
    body_envelope,
    integrity_entries,
    set_body_envelope,
    tampered_history,
)


async def send_secure(services: Services, clinic: Clinic, client_msg_id: str) -> str:
    result = await services.messaging.send(
        clinic.account_id, Sender("staff", clinic.staff_id, "Nurse"), clinic.conversation_id,
        SendRequest(client_msg_id=client_msg_id, body="Your lisinopril 10mg is ready",
                    secure=True), Actor("staff", clinic.staff_id))
    return result.message.id


async def relabel(services: Services, message_id: str, **values: object) -> None:
    async with services.db.write() as conn:
        await conn.execute(update(messages).where(messages.c.id == message_id)
                           .values(**values))


@pytest.mark.parametrize("values", [
    {"channel": "sms"},  # a secure message shown (and treated) as a plain SMS
    {"direction": "inbound", "sender_kind": "staff"},  # staff's words as the patient's
    {"seq": "next"},  # moved to another place in the thread
], ids=["channel", "direction", "seq"])
async def test_a_relabelled_message_fails_its_integrity_check(
        services: Services, clinic: Clinic, values: dict) -> None:
    """The relabelled row makes history answer ``data_integrity``, audited with its id."""
    message_id = await send_secure(services, clinic, "bound-1")
    if values.get("seq") == "next":
        async with services.db.read() as conn:
            top = (await conn.execute(select(func.max(messages.c.seq)).where(
                messages.c.conversation_id == clinic.conversation_id))).scalar_one()
        values = {"seq": top + 100}
    await relabel(services, message_id, **values)
    assert (await tampered_history(services, clinic)).code == ErrorCode.DATA_INTEGRITY
    assert [e["object_id"] for e in await integrity_entries(services, clinic.account_id)] \
        == [message_id]


async def test_a_body_sealed_before_the_change_still_reads(services: Services,
                                                           clinic: Clinic) -> None:
    """A version-1 envelope (bound to row and sender only, as every body was before) opens
    under the version-1 context; the same bytes relabelled as version 2 do not."""
    message_id = await send_secure(services, clinic, "legacy-1")
    envelope = await body_envelope(services, message_id)
    key_id = crypto.envelope_key_id(envelope)
    async with services.db.read() as conn:
        key: AESGCM = await services.keyring._key(conn, key_id, clinic.account_id)
    header = struct.pack(">BI", 1, key_id)
    nonce = os.urandom(crypto.NONCE_BYTES)
    context = (f"msg/v1|{clinic.account_id}|{clinic.conversation_id}|{message_id}|"
               f"staff:{clinic.staff_id}")
    legacy = header + nonce + key.encrypt(nonce, b"sealed the old way",
                                          header + context.encode())
    await set_body_envelope(services, message_id, legacy)
    page = await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                            before_seq=None, limit=50,
                                            actor=Actor("staff", clinic.staff_id))
    assert [m.body for m in page.messages if m.id == message_id] == ["sealed the old way"]

    await set_body_envelope(services, message_id, bytes([2]) + legacy[1:])
    assert (await tampered_history(services, clinic)).code == ErrorCode.DATA_INTEGRITY
