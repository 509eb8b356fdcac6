"""Patients and the inbox of conversations.

A patient's name, phone and date of birth are stored only as envelopes bound to the
patient's row; the phone is also kept as a blind index so inbound SMS (and duplicates)
can be found without decrypting every row. One conversation per patient.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError

from server import audit, crypto, phones
from server.audit import Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode, invalid
from server.keys import KeyRing
from server.notify import Notifier
from server.protocol import ConversationSummary, CreatePatientRequest, PatientSummary
from server.store import patients as patient_store
from server.store.db import Database

MAX_INBOX_PAGE = 200


class Patients:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock, default_region: str,
                 notifier: Notifier):
        self._db = db
        self._notifier = notifier
        self._keyring = keyring
        self._clock = clock
        self._region = default_region

    async def create(self, account_id: str, request: CreatePatientRequest, actor: Actor
                     ) -> tuple[PatientSummary, str]:
        """Store a patient and open its conversation; returns (patient, conversation id).

        Raises:
            AppError: ``invalid_request`` for a bad phone, name or date; ``conflict`` when
                the account already has a patient with this phone.
        """
        name = request.name.strip()
        if not name:
            raise invalid("name: must not be blank")
        phone = phones.to_e164(request.phone, self._region)
        dob = _date_of_birth(request.date_of_birth, self._clock.now())
        try:
            return await self._insert(account_id, name, phone, dob, actor, unknown=False)
        except IntegrityError:
            raise AppError(ErrorCode.CONFLICT,
                           "phone: a patient with this phone number already exists") from None

    async def for_phone(self, account_id: str, e164: str, unknown_name: str
                        ) -> tuple[str, str, str]:
        """(patient id, conversation id, display name) of the account's patient with this
        phone, creating one marked unknown (for an inbound SMS) when there is none."""
        index = self.phone_index(account_id, e164)
        for _ in range(2):  # a concurrent first SMS from the same number may win the race
            async with self._db.read() as conn:
                row = await patient_store.patient_by_phone_index(conn, account_id, index)
                if row is not None:
                    conversation = await patient_store.conversation_of_patient(conn, row["id"])
                    name = await self._keyring.open(
                        conn, account_id, row["name_enc"],
                        crypto.patient_field_context(account_id, row["id"], "name"))
                    return row["id"], conversation["id"], name
            try:
                summary, conversation_id = await self._insert(
                    account_id, unknown_name, e164, "", audit.SYSTEM, unknown=True)
                return summary.id, conversation_id, unknown_name
            except IntegrityError:
                continue
        raise AppError(ErrorCode.CONFLICT, "phone: could not resolve the sender")

    async def _insert(self, account_id: str, name: str, phone: str, dob: str, actor: Actor,
                      *, unknown: bool) -> tuple[PatientSummary, str]:
        patient_id, conversation_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = self._clock.now()
        async with self._db.write() as conn:
            values = {}
            for field, plain in (("name", name), ("phone", phone), ("dob", dob)):
                context = crypto.patient_field_context(account_id, patient_id, field)
                values[f"{field}_enc"] = await self._keyring.seal(
                    conn, account_id, plain, context)
            await patient_store.insert_patient(
                conn, id=patient_id, account_id=account_id, created_at=now,
                phone_index=self.phone_index(account_id, phone), unknown=unknown,
                **values)
            await patient_store.insert_conversation(
                conn, id=conversation_id, account_id=account_id, patient_id=patient_id,
                last_seq=0, last_activity_at=now, created_at=now)
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="patient.created", object_type="patient",
                               object_id=patient_id,
                               details={"conversation_id": conversation_id,
                                        "unknown": unknown})
        return PatientSummary(patient_id, name, phones.mask(phone)), conversation_id

    def phone_index(self, account_id: str, e164: str) -> str:
        return self._keyring.master.blind_index("phone", account_id, e164)

    async def inbox(self, account_id: str, reader_id: str, *, before: str | None = None,
                    limit: int = 50) -> list[ConversationSummary]:
        """Newest-first conversations of the account, with the reader's unread counts and
        whether each patient's secure page is open (on any node)."""
        if not 1 <= limit <= MAX_INBOX_PAGE:
            raise invalid(f"limit: must be between 1 and {MAX_INBOX_PAGE}")
        before_at = _parse_time("before", before) if before else None
        async with self._db.read() as conn:
            rows = await patient_store.conversation_page(
                conn, account_id, reader_id, before=before_at, limit=limit)
            summaries = []
            for row in rows:
                name, phone = await self.decrypt_identity(conn, account_id, row["patient_id"],
                                                          row["name_enc"], row["phone_enc"])
                summaries.append(ConversationSummary(
                    id=row["id"], patient=patient_summary(row, name, phone),
                    last_activity_at=rfc3339(row["last_activity_at"]),
                    last_seq=row["last_seq"], unread=row["unread"],
                    patient_online=self._notifier.patient_online(row["id"])))
        return summaries

    async def decrypt_identity(self, conn, account_id: str, patient_id: str,
                               name_enc: bytes, phone_enc: bytes) -> tuple[str, str]:
        """Raises AppError(data_integrity), audited, when a field fails to open."""
        try:
            name = await self._keyring.open(
                conn, account_id, name_enc,
                crypto.patient_field_context(account_id, patient_id, "name"))
            phone = await self._keyring.open(
                conn, account_id, phone_enc,
                crypto.patient_field_context(account_id, patient_id, "phone"))
        except crypto.DecryptError as exc:
            await audit.record_integrity_failure(
                self._db, self._clock, stream=account_id, object_type="patient",
                object_id=patient_id, reason=str(exc))
            raise AppError(ErrorCode.DATA_INTEGRITY,
                           "a stored patient record failed its integrity check; "
                           "the incident was recorded") from exc
        return name, phone


def _date_of_birth(text: str, now: datetime) -> str:
    try:
        born = date.fromisoformat(text)
    except ValueError:
        raise invalid("date_of_birth: not a real date (YYYY-MM-DD)") from None
    if born > now.date() or born.year < 1900:
        raise invalid("date_of_birth: must be between 1900-01-01 and today")
    return born.isoformat()


def _parse_time(field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{field}: not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise invalid(f"{field}: needs a UTC offset or Z")
    return moment


def patient_summary(row, name: str, phone: str) -> PatientSummary:
    """A conversation row's patient as the inbox shows it (``name`` and ``phone``
    decrypted by the caller)."""
    at = row["opted_out_at"]
    return PatientSummary(row["patient_id"], name, phones.mask(phone), row["opted_out"],
                          row["unknown"], rfc3339(at) if at is not None else None)
