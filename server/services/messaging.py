"""Sending and reading messages: the one path every channel goes through.

``send`` stores a message with the next per-conversation ``seq`` in one transaction
together with its audit entry, and only then returns: an acknowledgement always means
the message is durable (persist, then publish). Resending a ``client_msg_id`` returns the
original message and creates nothing.
"""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy.exc import IntegrityError

from server import audit, crypto
from server.audit import Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode, invalid, not_found
from server.protocol import HistoryPage, Message, Sender, SendRequest
from server.services.keys import KeyRing
from server.sms import keywords
from server.sms.outbox import HELP_REPLY, SmsOutbox
from server.store import accounts as account_store
from server.store import messages as message_store
from server.store import patients as patient_store
from server.store import sms as sms_store
from server.store.db import Database

MAX_HISTORY_PAGE = 200


class SendResult(msgspec.Struct, frozen=True):
    message: Message
    duplicate: bool  # True when the client_msg_id was already stored
    # For the publication (new messages only): the stored envelope, so what crosses
    # the broker is ciphertext, and the conversation's inbound count after this one.
    envelope: bytes = b""
    inbound_count: int = 0


class Messaging:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock, sms: SmsOutbox) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._sms = sms

    async def send(self, account_id: str, sender: Sender, conversation_id: str,
                   request: SendRequest, actor: Actor, *, patient_online: bool = False
                   ) -> SendResult:
        """Store one message durably and return it.

        Staff messages go out: ``secure`` picks Secure Chat, else it is an SMS, queued in
        the outbox in the same transaction. A secure message to a patient who is not on
        the secure page (``patient_online``) also queues a notification SMS holding only
        the clinic's name and a link. A patient's messages are always secure and inbound.

        Raises:
            AppError: ``not_found`` (no such conversation in this account),
                ``portal_inactive`` (secure while the portal is off), ``opted_out`` (an
                SMS to a patient who replied STOP), ``conflict`` (the ``client_msg_id``
                was used by another sender).
        """
        body = request.body
        if not body.strip():
            raise invalid("body: must not be blank")
        if sender.kind == "staff":
            direction, channel = "outbound", "secure" if request.secure else "sms"
        else:
            direction, channel = "inbound", "secure"
        # The SMS bridge's seam: an SMS is stored ``queued`` in this same transaction and
        # the bridge (issue 4) sends it from there; Secure Chat is delivered by the hub.
        status = "queued" if channel == "sms" else "sent"
        message_id = str(uuid.uuid4())
        now = self._clock.now()
        try:
            async with self._db.write() as conn:
                account = None
                if channel == "secure" and sender.kind == "staff":
                    account = await account_store.account(conn, account_id)
                    if account is None or not account["portal_active"]:
                        raise AppError(ErrorCode.PORTAL_INACTIVE,
                                       "Secure Chat needs the patient portal, which is off")
                position = await message_store.next_seq(conn, account_id, conversation_id,
                                                        now, inbound=direction == "inbound")
                if position is None:
                    raise not_found("conversation")
                seq, inbound_count, patient_id = position
                if channel == "sms" and await sms_store.is_opted_out(conn, patient_id):
                    raise AppError(ErrorCode.OPTED_OUT,
                                   "the patient replied STOP: no SMS can be sent")
                context = crypto.message_body_context(
                    account_id, conversation_id, message_id, f"{sender.kind}:{sender.id}")
                await message_store.insert_message(
                    conn, id=message_id, account_id=account_id,
                    conversation_id=conversation_id, seq=seq,
                    client_msg_id=request.client_msg_id, direction=direction,
                    channel=channel, sender_kind=sender.kind, sender_id=sender.id,
                    body_enc=(envelope := await self._keyring.seal(
                        conn, account_id, body, context)),
                    status=status, created_at=now)
                if channel == "sms":
                    await self._sms.queue(conn, account_id=account_id,
                                          conversation_id=conversation_id,
                                          patient_id=patient_id, message_id=message_id,
                                          kind="message", body=body)
                elif account is not None and not patient_online:
                    await self._sms.queue_notification(
                        conn, account_id=account_id, clinic_name=account["clinic_name"],
                        conversation_id=conversation_id, patient_id=patient_id,
                        message_id=message_id, seq=seq,
                        link_ttl_hours=account["secure_link_ttl_hours"])
                await audit.append(conn, self._clock, stream=account_id, actor=actor,
                                   action="message.sent", object_type="message",
                                   object_id=message_id,
                                   details={"conversation_id": conversation_id, "seq": seq,
                                            "channel": channel})
        except IntegrityError as exc:
            return await self._original(account_id, sender, conversation_id, request, exc)
        except AppError as exc:
            if exc.code not in (ErrorCode.PORTAL_INACTIVE, ErrorCode.OPTED_OUT):
                raise
            # A resend of a message stored before the portal was turned off still gets
            # its original answer.
            return await self._original(account_id, sender, conversation_id, request, exc)
        message = Message(conversation_id=conversation_id, id=message_id, seq=seq,
                          client_msg_id=request.client_msg_id, direction=direction,
                          channel=channel, sender=sender, body=body,
                          created_at=rfc3339(now), status=status)
        return SendResult(message, duplicate=False, envelope=envelope,
                          inbound_count=inbound_count)

    async def receive_sms(self, account_id: str, conversation_id: str, sender: Sender,
                          provider_sid: str, body: str) -> SendResult:
        """Store an inbound SMS (de-duplicated by the provider's id) and apply its
        keyword: STOP opts the patient out, START back in, HELP queues the help reply.
        The keyword message itself stays in the thread like any other."""
        word = keywords.keyword(body)
        message_id = str(uuid.uuid4())
        now = self._clock.now()
        request = SendRequest(provider_sid, body or " ", False)
        try:
            async with self._db.write() as conn:
                position = await message_store.next_seq(conn, account_id, conversation_id,
                                                        now, inbound=True)
                if position is None:
                    raise not_found("conversation")
                seq, inbound_count, patient_id = position
                context = crypto.message_body_context(
                    account_id, conversation_id, message_id, f"patient:{sender.id}")
                envelope = await self._keyring.seal(conn, account_id, body, context)
                await message_store.insert_message(
                    conn, id=message_id, account_id=account_id,
                    conversation_id=conversation_id, seq=seq, client_msg_id=provider_sid,
                    direction="inbound", channel="sms", sender_kind="patient",
                    sender_id=sender.id, body_enc=envelope, status="delivered",
                    created_at=now)
                await self._apply_keyword(conn, word, account_id, conversation_id, patient_id)
                await audit.append(conn, self._clock, stream=account_id, actor=Actor(
                    "patient", patient_id), action="sms.received", object_type="message",
                    object_id=message_id, details={"conversation_id": conversation_id,
                                                   "seq": seq,
                                                   "keyword": word.value if word else None})
        except IntegrityError as exc:  # the provider retried a webhook we already stored
            return await self._original(account_id, sender, conversation_id, request, exc)
        message = Message(conversation_id=conversation_id, id=message_id, seq=seq,
                          client_msg_id=provider_sid, direction="inbound", channel="sms",
                          sender=sender, body=body, created_at=rfc3339(now),
                          status="delivered")
        return SendResult(message, duplicate=False, envelope=envelope,
                          inbound_count=inbound_count)

    async def _apply_keyword(self, conn, word: keywords.Keyword | None,
                             account_id: str, conversation_id: str, patient_id: str) -> None:
        if word is keywords.Keyword.OPT_OUT or word is keywords.Keyword.OPT_IN:
            opted_out = word is keywords.Keyword.OPT_OUT
            await sms_store.set_opted_out(conn, patient_id, opted_out)
            await audit.append(conn, self._clock, stream=account_id, actor=audit.SYSTEM,
                               action="patient.opted_out" if opted_out else "patient.opted_in",
                               object_type="patient", object_id=patient_id)
        elif word is keywords.Keyword.HELP and not await sms_store.is_opted_out(conn,
                                                                              patient_id):
            account = await account_store.account(conn, account_id)
            await self._sms.queue(conn, account_id=account_id, conversation_id=conversation_id,
                                  patient_id=patient_id, message_id=None, kind="help",
                                  body=HELP_REPLY.format(clinic=account["clinic_name"]))

    async def _original(self, account_id: str, sender: Sender, conversation_id: str,
                        request: SendRequest, error: Exception) -> SendResult:
        """The message a resent ``client_msg_id`` already created (re-raises ``error``
        when the conflict was something else)."""
        async with self._db.read() as conn:
            row = await message_store.by_client_msg_id(conn, conversation_id,
                                                       request.client_msg_id)
            if row is None or row["account_id"] != account_id:
                raise error
            if (row["sender_kind"], row["sender_id"]) != (sender.kind, sender.id):
                raise AppError(ErrorCode.CONFLICT,
                               "client_msg_id: already used for another message")
            body = await self._open_body(conn, row)
        return SendResult(_message(row, sender, body), duplicate=True)

    async def history(self, account_id: str, conversation_id: str, *,
                      before_seq: int | None, limit: int, actor: Actor) -> HistoryPage:
        """A page of messages, oldest first, ending before ``before_seq`` (or at the end).

        Every read is audited; when the audit entry cannot be written, nothing is
        returned (fail closed).
        """
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise invalid(f"limit: must be between 1 and {MAX_HISTORY_PAGE}")
        if before_seq is not None and before_seq < 1:
            raise invalid("before_seq: must be at least 1")
        async with self._db.read() as conn:
            convo = await patient_store.conversation(conn, account_id, conversation_id)
            if convo is None:
                raise not_found("conversation")
            rows = await message_store.page(conn, conversation_id, before_seq=before_seq,
                                            limit=limit + 1)
            patient_name = await self._open_patient_name(conn, account_id, convo)
            page = []
            for row in reversed(rows[:limit]):
                name = row["staff_name"] if row["sender_kind"] == "staff" else patient_name
                sender = Sender(row["sender_kind"], row["sender_id"], name or "")
                page.append(_message(row, sender, await self._open_body(conn, row)))
        async with self._db.write() as conn:
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="conversation.history_read",
                               object_type="conversation", object_id=conversation_id,
                               details={"count": len(page), "before_seq": before_seq})
        return HistoryPage(messages=page, has_more=len(rows) > limit)

    async def _open_patient_name(self, conn, account_id: str, convo) -> str:
        context = crypto.patient_field_context(account_id, convo["patient_id"], "name")
        try:
            return await self._keyring.open(conn, account_id, convo["name_enc"], context)
        except crypto.DecryptError as exc:
            await audit.record_integrity_failure(
                self._db, self._clock, stream=account_id, object_type="patient",
                object_id=convo["patient_id"], reason=str(exc))
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored patient record failed its integrity check; "
                           "the incident was recorded") from exc

    async def _open_body(self, conn, row) -> str:
        context = crypto.message_body_context(row["account_id"], row["conversation_id"],
                                              row["id"],
                                              f"{row['sender_kind']}:{row['sender_id']}")
        try:
            return await self._keyring.open(conn, row["account_id"], row["body_enc"], context)
        except crypto.DecryptError as exc:
            await audit.record_integrity_failure(
                self._db, self._clock, stream=row["account_id"], object_type="message",
                object_id=row["id"], reason=str(exc))
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored message failed its integrity check; "
                           "the incident was recorded") from exc


def _message(row, sender: Sender, body: str) -> Message:
    return Message(conversation_id=row["conversation_id"], id=row["id"], seq=row["seq"],
                   client_msg_id=row["client_msg_id"], direction=row["direction"],
                   channel=row["channel"], sender=sender, body=body,
                   created_at=rfc3339(row["created_at"]), status=row["status"])
