"""Sealing and opening what a conversation stores: message bodies and the patient's name.

A message body is sealed under the context of its row (account, conversation, id,
sender, channel, direction, seq: ``crypto.message_body_context``), so a body moved to
another row does not open. Opening is the mirror; a failed check is recorded in the
audit log before it becomes ``data_integrity``, so tampering is never silent. Every
path that seals or opens a message body goes through :class:`MessageBodies`.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from server import audit, crypto
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode
from server.keys import KeyRing
from server.protocol import Message, Sender
from server.store.db import Database


class BodyPlace(NamedTuple):
    """Where a message body lives: what its sealing context names."""

    account_id: str
    conversation_id: str
    message_id: str
    sender_kind: str
    sender_id: str
    channel: str
    direction: str
    seq: int

    @classmethod
    def of_row(cls, row) -> BodyPlace:
        return cls(row["account_id"], row["conversation_id"], row["id"], row["sender_kind"],
                   row["sender_id"], row["channel"], row["direction"], row["seq"])

    def context(self, version: int = crypto.ENVELOPE_VERSION) -> str:
        return crypto.message_body_context(
            self.account_id, self.conversation_id, self.message_id,
            f"{self.sender_kind}:{self.sender_id}", self.channel, self.direction, self.seq,
            version=version)


class MessageBodies:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def seal_message(self, conn: AsyncConnection, place: BodyPlace, body: str
                           ) -> bytes:
        return await self._keyring.seal(conn, place.account_id, body, place.context())

    async def open_message(self, place: BodyPlace, envelope: bytes,
                           conn: AsyncConnection | None = None) -> str:
        """A message body. Without ``conn`` the store is read only when the account's
        key is not cached yet (the hot path: a publication opened once per node).

        Raises:
            AppError: ``data_integrity`` (recorded in the audit log first).
        """
        context = place.context(crypto.envelope_version(envelope))
        try:
            if conn is None:
                return await self._keyring.open_with(self._db, place.account_id, envelope,
                                                     context)
            return await self._keyring.open(conn, place.account_id, envelope, context)
        except crypto.DecryptError as exc:
            await self._integrity_failure(place.account_id, "message", place.message_id, exc)
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored message failed its integrity check; "
                           "the incident was recorded") from exc

    async def body(self, conn: AsyncConnection | None, row) -> str:
        """A message row's body."""
        return await self.open_message(BodyPlace.of_row(row), row["body_enc"], conn)

    async def patient_name(self, conn: AsyncConnection, account_id: str, convo) -> str:
        """The name of a conversation row's patient (``patient_id``, ``name_enc``)."""
        context = crypto.patient_field_context(account_id, convo["patient_id"], "name")
        try:
            return await self._keyring.open(conn, account_id, convo["name_enc"], context)
        except crypto.DecryptError as exc:
            await self._integrity_failure(account_id, "patient", convo["patient_id"], exc)
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored patient record failed its integrity check; "
                           "the incident was recorded") from exc

    async def _integrity_failure(self, account_id: str, object_type: str, object_id: str,
                                 exc: Exception) -> None:
        await audit.record_integrity_failure(
            self._db, self._clock, stream=account_id, object_type=object_type,
            object_id=object_id, reason=str(exc))


def message_from_row(row, sender: Sender, body: str) -> Message:
    """The ``message`` frame for a stored row, its body opened."""
    return Message(conversation_id=row["conversation_id"], id=row["id"], seq=row["seq"],
                   client_msg_id=row["client_msg_id"], direction=row["direction"],
                   channel=row["channel"], sender=sender, body=body,
                   created_at=rfc3339(row["created_at"]), status=row["status"])
