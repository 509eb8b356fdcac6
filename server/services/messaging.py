"""Sending and reading messages: the one path every channel goes through.

``send`` stores a message with the next per-conversation ``seq`` in one transaction
together with its audit entry (and its SMS or notification), and only then returns: an
acknowledgement always means the message is durable (persist, then publish). Sends
arriving together share that transaction (group commit through the node's one writer).
Resending a ``client_msg_id`` returns the original message and creates nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from server import audit
from server.audit import Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode, invalid, not_found
from server.keys import KeyRing
from server.protocol import HistoryPage, Message, MessageStatus, Sender, SendRequest
from server.services.links import LinkMint
from server.services.message_bodies import BodyPlace, MessageBodies, message_from_row
from server.services.opt_out import OptOutChange, set_opt_out
from server.services.sms_outbox import HELP_REPLY, SmsOutbox
from server.sms import keywords
from server.store import accounts as account_store
from server.store import messages as message_store
from server.store import patients as patient_store
from server.store import sms as sms_store
from server.store.db import Database
from server.store.group_commit import GroupCommit

MAX_HISTORY_PAGE = 200


class SendResult(msgspec.Struct, frozen=True):
    message: Message
    duplicate: bool  # True when the client_msg_id was already stored
    # For the publication (new messages only): the stored envelope, so what crosses
    # the broker is ciphertext, and the conversation's inbound count after this one.
    envelope: bytes = b""
    inbound_count: int = 0
    # Whether this send queued an SMS (the message itself, or a notification): only
    # then is the SMS worker woken.
    sms_queued: bool = False
    # An inbound STOP/START that changed the patient's opt-out: publish it too.
    opt_out: OptOutChange | None = None
    # Why a new message's status is what it is (``opted_out`` for ``not_notified``):
    # the ``status`` frame published after the message carries it.
    status_error: str | None = None


class _Send(msgspec.Struct):
    """One send waiting for the node's writer."""

    account_id: str
    sender: Sender
    conversation_id: str
    request: SendRequest
    actor: Actor
    patient_online: bool
    direction: str
    channel: str
    on_stored: Callable[[SendResult], None] | None


class _Resend(msgspec.Struct, frozen=True):
    """The batch's answer for a ``client_msg_id`` already stored (maybe by this very
    batch): the caller answers with the original after the commit, or raises
    ``error`` when there is none."""

    error: AppError


class Messaging:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock, sms: SmsOutbox,
                 mint: LinkMint, *, window_seconds: float = 0.0) -> None:
        self._mint = mint
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._sms = sms
        self._bodies = MessageBodies(db, keyring, clock)
        # The node's one writer of sends (group commit, server/store/group_commit.py).
        self.writer: GroupCommit[_Send, SendResult | _Resend] = GroupCommit(
            db, self._store_batch, self._after_commit, window_seconds=window_seconds)

    async def send(self, account_id: str, sender: Sender, conversation_id: str,
                   request: SendRequest, actor: Actor, *, patient_online: bool = False,
                   on_stored: Callable[[SendResult], None] | None = None) -> SendResult:
        """Store one message durably and return it.

        Staff messages go out: ``secure`` picks Secure Chat, else it is an SMS, queued in
        the outbox in the same transaction. A secure message to a patient who is not on
        the secure page (``patient_online``) also queues a notification SMS holding only
        the clinic's name and a link; when the patient replied STOP none can be sent,
        and the message is stored ``not_notified`` (``status_error`` ``opted_out``). A
        patient's messages are always secure and inbound.

        Sends arriving together share one transaction (group commit); this returns only
        after that transaction committed. ``on_stored`` is called with a new message
        right after the commit, before any caller of that batch resumes, in seq order per
        conversation: the place to publish it.

        Raises:
            AppError: ``not_found`` (no such conversation in this account),
                ``portal_inactive`` (secure while the portal is off), ``invalid_request``
                (secure to a patient from an unknown number), ``opted_out`` (an
                SMS to a patient who replied STOP), ``conflict`` (the ``client_msg_id``
                was used by another sender), ``unavailable`` (the node's write queue is
                full, or the store failed: nothing was stored, resend the same
                ``client_msg_id``).
        """
        if not request.body.strip():
            raise invalid("body: must not be blank")
        if sender.kind == "staff":
            direction, channel = "outbound", "secure" if request.secure else "sms"
        else:
            direction, channel = "inbound", "secure"
        item = _Send(account_id, sender, conversation_id, request, actor, patient_online,
                     direction, channel, on_stored)
        try:
            outcome = await self.writer.submit(item)
        except IntegrityError as exc:  # raced by a resend stored on another node
            return await self._original(account_id, sender, conversation_id, request, exc)
        if isinstance(outcome, _Resend):
            return await self._original(account_id, sender, conversation_id, request,
                                        outcome.error)
        return outcome

    async def _store_batch(self, conn: AsyncConnection, items: list[_Send]
                           ) -> list[SendResult | _Resend | BaseException]:
        """Store a batch of sends in the caller's transaction; one outcome per item.

        One read locks and returns every conversation of the batch with its account's
        portal switch and the patient's opt-out (never cached: another node may have
        just turned the portal off); one read finds resent client_msg_ids; seqs
        are then numbered in memory and the rows written with one statement per table.
        A refused send changes nothing, so it does not disturb the others.
        """
        now = self._clock.now()
        convos = await message_store.lock_conversations(
            conn, (item.conversation_id for item in items))
        stored = await message_store.existing_client_msg_ids(
            conn, ((item.conversation_id, item.request.client_msg_id) for item in items
                   if item.conversation_id in convos))
        outcomes: list[SendResult | _Resend | BaseException] = []
        message_rows: list[dict] = []
        outbox_rows: list[dict] = []
        link_rows: list[dict] = []
        audit_entries: list[audit.NewEntry] = []
        touched: dict[str, dict] = {}
        for item in items:
            try:
                outcome = await self._stage(conn, item, now, convos, stored, message_rows,
                                            outbox_rows, link_rows, audit_entries, touched)
            except AppError as exc:
                outcome = exc
            outcomes.append(outcome)
        await message_store.insert_messages(conn, message_rows)
        await sms_store.insert_links(conn, link_rows)
        await sms_store.insert_outbox_rows(conn, outbox_rows)
        await message_store.advance_conversations(conn, now, touched.values())
        await audit.append_many(conn, self._clock, audit_entries)
        return outcomes

    async def _stage(self, conn: AsyncConnection, item: _Send, now, convos: dict,
                     stored: set, message_rows: list, outbox_rows: list, link_rows: list,
                     audit_entries: list, touched: dict) -> SendResult | _Resend:
        """Check one send against the batch's view and add its rows; raises AppError
        (having changed nothing) when it is refused."""
        convo = convos.get(item.conversation_id)
        if convo is None or convo["account_id"] != item.account_id:
            raise not_found("conversation")
        key = (item.conversation_id, item.request.client_msg_id)
        if key in stored:
            return _Resend(AppError(ErrorCode.CONFLICT,
                                    "client_msg_id: already used for another message"))
        staff_secure = item.channel == "secure" and item.sender.kind == "staff"
        if staff_secure and not convo["portal_active"]:
            raise AppError(ErrorCode.PORTAL_INACTIVE,
                           "Secure Chat needs the patient portal, which is off")
        if item.sender.kind == "patient" and not convo["portal_active"]:
            # A page still open when the portal went off (its socket is being closed):
            # staff could not answer securely, so nothing is taken.
            raise AppError(ErrorCode.PORTAL_INACTIVE,
                           "secure messaging is not available; please call your clinic")
        if staff_secure and convo["unknown"]:
            # A patient made for an SMS from an unknown number has no date of birth on file:
            # they could never verify, so the message would wait behind a link forever.
            raise invalid("secure: this patient came from an unknown number and cannot "
                          "verify; add their details or send an SMS")
        if item.channel == "sms" and convo["opted_out"]:
            raise AppError(ErrorCode.OPTED_OUT,
                           "the patient replied STOP: no SMS can be sent")
        sender, account_id, body = item.sender, item.account_id, item.request.body
        message_id = str(uuid.uuid4())
        seq = convo["last_seq"] + 1
        # Seal (the only step here that can fail) before changing the batch's view.
        envelope = await self._bodies.seal_message(conn, BodyPlace(
            account_id, item.conversation_id, message_id, sender.kind, sender.id,
            item.channel, item.direction, seq), body)
        extra: list[dict] = []
        notify_link = None
        status = MessageStatus.QUEUED if item.channel == "sms" else MessageStatus.SENT
        if item.channel == "sms":
            extra.append(await self._sms.outbox_row(
                conn, account_id=account_id, conversation_id=item.conversation_id,
                patient_id=convo["patient_id"], message_id=message_id, kind="message",
                body=body))
        elif staff_secure and not item.patient_online and convo["opted_out"]:
            # The patient cannot be told it exists: say so, rather than "sent" (the
            # thread never says "sent" to someone never told).
            status = MessageStatus.NOT_NOTIFIED
        elif staff_secure and not item.patient_online and self._sms.should_notify(
                opted_out=convo["opted_out"], notified_at=convo["notified_at"],
                notified_seq=convo["notified_seq"],
                read_seq=convo["patient_read_seq"] or 0, now=now):
            url, notify_link = self._mint.mint(account_id, item.conversation_id,
                                               convo["secure_link_ttl_hours"], now)
            extra.append(await self._sms.outbox_row(
                conn, account_id=account_id, conversation_id=item.conversation_id,
                patient_id=convo["patient_id"], message_id=message_id, kind="notification",
                body=self._sms.notification_text(convo["clinic_name"], url)))
        # From here on nothing fails: commit this send to the batch.
        convo["last_seq"] = seq
        if item.direction == "inbound":
            convo["inbound_count"] += 1
        if notify_link is not None:
            link_rows.append(notify_link)
            convo["notified_at"], convo["notified_seq"] = now, seq
        outbox_rows.extend(extra)
        touched[item.conversation_id] = convo
        stored.add(key)
        message_rows.append(dict(
            id=message_id, account_id=account_id, conversation_id=item.conversation_id,
            seq=seq, client_msg_id=item.request.client_msg_id, direction=item.direction,
            channel=item.channel, sender_kind=sender.kind, sender_id=sender.id,
            body_enc=envelope, status=status, created_at=now))
        audit_entries.append(audit.NewEntry(
            stream=account_id, actor=item.actor, action="message.sent",
            object_type="message", object_id=message_id,
            details={"conversation_id": item.conversation_id, "seq": seq,
                     "channel": item.channel}))
        message = Message(conversation_id=item.conversation_id, id=message_id, seq=seq,
                          client_msg_id=item.request.client_msg_id,
                          direction=item.direction, channel=item.channel, sender=sender,
                          body=body, created_at=rfc3339(now), status=status)
        return SendResult(message, duplicate=False, envelope=envelope,
                          inbound_count=convo["inbound_count"], sms_queued=bool(extra),
                          status_error=ErrorCode.OPTED_OUT.value
                          if status == MessageStatus.NOT_NOTIFIED else None)

    @staticmethod
    def _after_commit(items: list[_Send],
                      outcomes: Sequence[SendResult | _Resend | BaseException]) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            if item.on_stored is not None and isinstance(outcome, SendResult):
                item.on_stored(outcome)

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
                envelope = await self._bodies.seal_message(conn, BodyPlace(
                    account_id, conversation_id, message_id, "patient", sender.id, "sms",
                    "inbound", seq), body)
                await message_store.insert_message(
                    conn, id=message_id, account_id=account_id,
                    conversation_id=conversation_id, seq=seq, client_msg_id=provider_sid,
                    direction="inbound", channel="sms", sender_kind="patient",
                    sender_id=sender.id, body_enc=envelope, status=MessageStatus.DELIVERED,
                    created_at=now)
                opt_out = await self._apply_keyword(conn, word, account_id,
                                                    conversation_id, patient_id)
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
                          status=MessageStatus.DELIVERED)
        return SendResult(message, duplicate=False, envelope=envelope,
                          inbound_count=inbound_count, opt_out=opt_out)

    async def _apply_keyword(self, conn, word: keywords.Keyword | None, account_id: str,
                             conversation_id: str, patient_id: str) -> OptOutChange | None:
        """STOP/START change the opt-out (returned when it changed); HELP queues the
        help reply."""
        if word is keywords.Keyword.OPT_OUT or word is keywords.Keyword.OPT_IN:
            return await set_opt_out(conn, self._clock, account_id=account_id,
                                     patient_id=patient_id, cause="keyword",
                                     opted_out=word is keywords.Keyword.OPT_OUT)
        if word is keywords.Keyword.HELP and not await sms_store.is_opted_out(conn,
                                                                              patient_id):
            account = await account_store.account(conn, account_id)
            await self._sms.queue(conn, account_id=account_id, conversation_id=conversation_id,
                                  patient_id=patient_id, message_id=None, kind="help",
                                  body=HELP_REPLY.format(clinic=account["clinic_name"]))
        return None

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
            body = await self._bodies.body(conn, row)
        return SendResult(message_from_row(row, sender, body), duplicate=True)

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
            patient_name = await self._bodies.patient_name(conn, account_id, convo)
            page = []
            for row in reversed(rows[:limit]):
                name = row["staff_name"] if row["sender_kind"] == "staff" else patient_name
                sender = Sender(row["sender_kind"], row["sender_id"], name or "")
                page.append(message_from_row(row, sender, await self._bodies.body(conn, row)))
        async with self._db.write() as conn:
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="conversation.history_read",
                               object_type="conversation", object_id=conversation_id,
                               details={"count": len(page), "before_seq": before_seq})
        return HistoryPage(messages=page, has_more=len(rows) > limit)

    async def patient_sms(self, account_id: str, phone_index: str, limit: int
                          ) -> list[Message]:
        """Up to ``limit`` SMS the account's patient with this phone sent, newest first:
        the "sent" side of a handset on the demo's phone page (its receiving side is the
        simulator's store). Not audited, as that page is no staff read: it is what the
        patient's own phone holds, and exists only in demo mode."""
        async with self._db.read() as conn:
            patient = await patient_store.patient_by_phone_index(conn, account_id,
                                                                 phone_index)
            convo = patient and await patient_store.conversation_of_patient(conn,
                                                                            patient["id"])
            if not convo:
                return []
            sender = Sender("patient", patient["id"], "")
            return [message_from_row(row, sender, await self._bodies.body(conn, row))
                    for row in await message_store.patient_sms(conn, convo["id"], limit)]
