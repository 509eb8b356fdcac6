"""Patient sessions: bound to one conversation, with the same server-side rules as staff
sessions (256-bit cookie value stored hashed; 15 min idle, 12 h absolute).

The verification that opens one (secure link + date of birth) is the patient page's
job (issue 5); this module opens and checks the session itself.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from server import audit
from server.audit import Actor
from server.auth import TOUCH_EVERY, new_session_token, session_id, session_over
from server.clock import Clock
from server.errors import AppError, ErrorCode
from server.notify import Notifier
from server.read_batch import ReadBatcher
from server.settings import Settings
from server.store import links as link_store
from server.store import sessions as session_store
from server.store.db import Database


class PortalOff(AppError):
    """The session's account has turned its patient portal off (its sessions were ended
    then); carries the clinic's name for the neutral "please call" page."""

    def __init__(self, clinic_name: str) -> None:
        super().__init__(ErrorCode.PORTAL_INACTIVE,
                         "secure messaging is not available; please call your clinic")
        self.clinic_name = clinic_name


class PatientPrincipal(msgspec.Struct, frozen=True):
    session_id: str
    account_id: str
    patient_id: str
    conversation_id: str

    def actor(self, ip: str | None = None, request_id: str | None = None) -> Actor:
        return Actor("patient", self.patient_id, ip, request_id)


class PatientSessions:
    def __init__(self, db: Database, clock: Clock, settings: Settings,
                 notifier: Notifier) -> None:
        self._db = db
        self._notifier = notifier
        self._clock = clock
        self._settings = settings
        self._sessions = ReadBatcher(db, session_store.patient_sessions)

    async def open(self, account_id: str, patient_id: str, conversation_id: str,
                   actor: Actor) -> tuple[str, PatientPrincipal]:
        """A new session for a verified patient; returns (cookie token, principal)."""
        token, sid = new_session_token()
        now = self._clock.now()
        async with self._db.write() as conn:
            await session_store.insert_session(
                conn, id=sid, kind="patient", account_id=account_id, patient_id=patient_id,
                conversation_id=conversation_id, created_at=now, last_seen_at=now,
                expires_at=now + timedelta(seconds=self._settings.session_absolute_seconds))
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="patient.session_opened", object_type="conversation",
                               object_id=conversation_id)
        return token, PatientPrincipal(sid, account_id, patient_id, conversation_id)

    async def authenticate(self, token: str | None, *, activity: bool = True
                           ) -> PatientPrincipal:
        """Raises AppError(unauthenticated) unless the token is a live patient session;
        AppError(portal_inactive) for a session (live or ended) of an account whose
        patient portal is off, so the page can say so rather than "verify again"."""
        if not token:
            raise AppError(ErrorCode.UNAUTHENTICATED, "verify first")
        sid = session_id(token)
        now = self._clock.now()
        row = await self._sessions.get(sid)  # shares a query with lookups arriving together
        if row is not None and not row["portal_active"]:
            raise PortalOff(row["clinic_name"])
        if row is None or session_over(row, now, self._settings):
            raise AppError(ErrorCode.UNAUTHENTICATED, "session expired; verify again")
        if activity and now - row["last_seen_at"] >= TOUCH_EVERY:
            async with self._db.write() as conn:
                await session_store.touch(conn, sid, now)
        return PatientPrincipal(sid, row["account_id"], row["patient_id"],
                                row["conversation_id"])

    async def end(self, principal: PatientPrincipal) -> None:
        """The patient pressed "End session". The links issued so far then open only
        with the one-time code as well (docs/security.md): whoever uses this browser
        next cannot get back in from its history with the date of birth alone. Once
        that committed, the session's sockets close on every node."""
        now = self._clock.now()
        async with self._db.write() as conn:
            await session_store.end_session(conn, principal.session_id, now)
            await link_store.session_ended(conn, principal.conversation_id, now)
            await audit.append(conn, self._clock, stream=principal.account_id,
                               actor=principal.actor(), action="patient.session_ended",
                               object_type="conversation",
                               object_id=principal.conversation_id)
        self._notifier.session_ended(principal.session_id)
