"""Opening what a conversation stores sealed: message bodies and the patient's name.

Each is opened under the context it was sealed for (a message's names its row, sender,
channel, direction and seq, ``crypto.message_body_context``); a failed check is recorded
in the audit log before it becomes ``data_integrity``, so tampering is never silent.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from server import audit, crypto
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode
from server.keys import KeyRing
from server.protocol import Message, Sender
from server.store.db import Database


class SealedReader:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def body(self, conn: AsyncConnection, row) -> str:
        """A message row's body."""
        context = crypto.message_body_context(
            row["account_id"], row["conversation_id"], row["id"],
            f"{row['sender_kind']}:{row['sender_id']}", row["channel"], row["direction"],
            row["seq"], version=crypto.envelope_version(row["body_enc"]))
        try:
            return await self._keyring.open(conn, row["account_id"], row["body_enc"], context)
        except crypto.DecryptError as exc:
            await self._integrity_failure(row["account_id"], "message", row["id"], exc)
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored message failed its integrity check; "
                           "the incident was recorded") from exc

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
