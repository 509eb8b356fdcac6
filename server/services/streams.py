"""What the real-time hub asks of the store: authorisation of a conversation, replay and
gap-fill pages, stream positions, read pointers and delivery state.

Bodies are decrypted here, once per node per message; patient summaries (names are PHI,
stored encrypted) are decrypted once per conversation and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from server.audit import Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode
from server.events import MessageEvent
from server.keys import KeyRing
from server.protocol import Message, PatientSummary, Sender
from server.services.audit_batch import AuditBatcher
from server.services.message_bodies import BodyPlace, MessageBodies, message_from_row
from server.services.patients import Patients, patient_summary
from server.store import patients as patient_store
from server.store import sessions as session_store
from server.store import streams as stream_store
from server.store.db import Database

# Patient summaries kept decrypted in memory; a clinic's active threads fit many times.
SUMMARY_CACHE = 10_000
# Status frames sent for one ``read``; beyond that the ``read`` frame itself says it all.
MAX_READ_STATUS = 200


class ReadResult(NamedTuple):
    seq: int  # the position read to (at most the stream's end)
    inbound_seen: int  # inbound messages up to it
    changed: list[str]  # messages that became ``read``
    at: str
    last_seq: int  # the conversation now, for inbox updates
    inbound_count: int
    last_activity_at: str


class Streams:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock, patients: Patients):
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._patients = patients
        self._bodies = MessageBodies(db, keyring, clock)
        self._subscribe_audit = AuditBatcher(db, clock)
        self._summaries: OrderedDict[str, tuple[str, PatientSummary]] = OrderedDict()

    async def summary(self, account_id: str, conversation_id: str) -> PatientSummary | None:
        """The conversation's patient, or None when it is not in this account."""
        cached = self._summaries.get(conversation_id)
        if cached is not None:
            self._summaries.move_to_end(conversation_id)
            return cached[1] if cached[0] == account_id else None
        async with self._db.read() as conn:
            row = await patient_store.conversation(conn, account_id, conversation_id)
            if row is None:
                return None
            name, phone = await self._patients.decrypt_identity(
                conn, account_id, row["patient_id"], row["name_enc"], row["phone_enc"])
        summary = patient_summary(row, name, phone)
        self._summaries[conversation_id] = (account_id, summary)
        if len(self._summaries) > SUMMARY_CACHE:
            self._summaries.popitem(last=False)
        return summary

    async def opt_out_changed(self, account_id: str, conversation_id: str,
                              opted_out: bool, opted_out_at: str) -> PatientSummary | None:
        """The conversation's patient with its new opt-out state (the cached summary is
        updated; one not cached is read from the store, which already holds it)."""
        cached = self._summaries.get(conversation_id)
        if cached is None or cached[0] != account_id:
            return await self.summary(account_id, conversation_id)
        summary = msgspec.structs.replace(cached[1], opted_out=opted_out,
                                          opted_out_at=opted_out_at or None)
        self._summaries[conversation_id] = (account_id, summary)
        return summary

    def forget_summaries(self) -> None:
        """Drop the cached summaries: opt-out publications may have been lost (the
        broker was down), and the store has the truth."""
        self._summaries.clear()

    async def replay(self, account_id: str, conversation_id: str, after_seq: int,
                     limit: int, upto_seq: int | None = None) -> list[Message]:
        """Stored messages after ``after_seq``, oldest first, decrypted."""
        summary = await self.summary(account_id, conversation_id)
        if summary is None:
            return []
        async with self._db.read() as conn:
            rows = await stream_store.messages_after(conn, conversation_id, after_seq, limit,
                                                     upto_seq)
        return [await self._message(row, summary) for row in rows]

    async def audit_subscribe(self, account_id: str, conversation_id: str, after_seq: int,
                              actor: Actor) -> None:
        """A subscription reads PHI (its replay): audited once, before any is sent.
        Subscribes arriving together share one write transaction (a reconnect storm)."""
        await self._subscribe_audit.append(
            stream=account_id, actor=actor, action="conversation.subscribed",
            object_type="conversation", object_id=conversation_id,
            details={"after_seq": after_seq})

    async def flush(self) -> None:
        """Write the audit entries still waiting (the node is stopping)."""
        await self._subscribe_audit.flush()

    async def from_event(self, event: MessageEvent) -> Message | None:
        """The message of a publication, decrypted; None if the conversation is unknown."""
        summary = await self.summary(event.account_id, event.conversation_id)
        if summary is None:
            return None
        name = event.sender_name if event.sender_kind == "staff" else summary.display_name
        place = BodyPlace(event.account_id, event.conversation_id, event.id,
                          event.sender_kind, event.sender_id, event.channel, event.direction,
                          event.seq)
        try:
            body = await self._bodies.open_message(place, event.body_enc)
        except AppError:  # recorded; the gap fill reads the row and reports it
            return None
        return Message(conversation_id=event.conversation_id, id=event.id, seq=event.seq,
                       client_msg_id=event.client_msg_id, direction=event.direction,
                       channel=event.channel, sender=Sender(event.sender_kind, event.sender_id,
                                                            name),
                       body=body, created_at=event.created_at, status=event.status)

    async def _message(self, row, summary: PatientSummary) -> Message:
        body = await self._bodies.body(None, row)
        name = row["staff_name"] if row["sender_kind"] == "staff" else summary.display_name
        return message_from_row(row, Sender(row["sender_kind"], row["sender_id"], name or ""),
                                body)

    async def positions(self, conversation_ids: Sequence[str]) -> dict[str, int]:
        async with self._db.read() as conn:
            return await stream_store.positions(conn, conversation_ids)

    async def read_positions(self, reader_id: str) -> dict[str, int]:
        async with self._db.read() as conn:
            return await stream_store.read_positions(conn, reader_id)

    async def mark_read(self, conversation_id: str, reader: Sender, seq: int) -> ReadResult:
        """Record that ``reader`` has read up to ``seq``; the other side's secure messages
        up to it become ``read``.

        A ``seq`` past the end counts as reading to the end: the pointer never runs ahead
        of the stream (a pointer ahead would hide, and never let the reader clear, the
        messages still to come)."""
        # Staff read inbound messages; a patient reads outbound ones.
        other_side = "inbound" if reader.kind == "staff" else "outbound"
        async with self._db.write() as conn:
            position = await stream_store.conversation_position(conn, conversation_id)
            if position is None:
                raise AppError(ErrorCode.NOT_FOUND, "no such conversation")
            seq = min(seq, position["last_seq"])
            inbound_seen = await stream_store.inbound_upto(conn, conversation_id, seq)
            if seq > 0:
                await stream_store.advance_read_pointer(conn, conversation_id, reader.id,
                                                        reader.kind, seq, inbound_seen)
            changed = await stream_store.mark_read(conn, conversation_id, seq, other_side,
                                                   MAX_READ_STATUS)
        return ReadResult(seq, inbound_seen, [row["id"] for row in changed],
                          rfc3339(self._clock.now()), position["last_seq"],
                          position["inbound_count"], rfc3339(position["last_activity_at"]))

    async def message_channel(self, message_id: str) -> str | None:
        async with self._db.read() as conn:
            return await stream_store.message_channel(conn, message_id)

    async def mark_delivered(self, message_ids: Sequence[str]) -> list:
        async with self._db.write() as conn:
            return await stream_store.mark_delivered(conn, message_ids)

    async def session_states(self, session_ids: Sequence[str]) -> dict:
        async with self._db.read() as conn:
            rows = await session_store.session_states(conn, list(session_ids))
        return {row["id"]: row for row in rows}

    async def touch_sessions(self, session_ids: Sequence[str]) -> None:
        async with self._db.write() as conn:
            await session_store.touch_many(conn, list(session_ids), self._clock.now())
