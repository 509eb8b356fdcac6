"""Staff sign-in and server-side sessions.

* A session id is 256 bits from ``secrets``; the store keeps only its SHA-256, so a
  leaked table opens nothing. A new id is issued at every sign-in (no fixation).
* A session ends after ``session_idle_seconds`` without user activity or
  ``session_absolute_seconds`` after sign-in, whichever comes first. Activity is
  recorded at most once per :data:`TOUCH_EVERY` to spare a write per request; requests
  that are not the user's doing (WebSocket pings, background polling) do not count.
* Each attempt is counted before its password is hashed, per email from this address,
  per address and per email (:mod:`server.sign_in_limits`), whether the email exists or
  not, so the answer never tells which emails exist and racing attempts cannot slip
  past the lock. Only after the right password is a deactivated member told so.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from server import audit, crypto
from server.audit import Actor
from server.clock import Clock
from server.crypto import MasterKey
from server.errors import AppError, ErrorCode
from server.notify import Notifier
from server.passwords import PasswordHashing
from server.read_batch import ReadBatcher
from server.settings import Settings
from server.sign_in_limits import Reservation, SignInLimits
from server.store import accounts as account_store
from server.store import sessions as session_store
from server.store.db import Database

# Activity is written at most this often; idle expiry is exact to within this much.
TOUCH_EVERY = timedelta(seconds=30)
WRONG_LOGIN = "wrong email or password"
DEACTIVATED = "Your account was deactivated by an administrator."


class StaffPrincipal(msgspec.Struct, frozen=True):
    """The signed-in staff member behind a request or socket."""

    session_id: str
    staff_id: str
    account_id: str
    role: str
    name: str
    email: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def actor(self, ip: str | None = None, request_id: str | None = None) -> Actor:
        return Actor("staff", self.staff_id, ip, request_id)


def new_session_token() -> tuple[str, str]:
    """A fresh cookie value and the id the store keeps for it."""
    return crypto.bearer_token()


def session_id(token: str) -> str:
    """The store's id for a session cookie's value."""
    return crypto.token_digest(token)


def normalise_email(email: str) -> str:
    return email.strip().lower()


class StaffAuth:
    def __init__(self, db: Database, clock: Clock, settings: Settings,
                 hashing: PasswordHashing, master: MasterKey, notifier: Notifier) -> None:
        self._db = db
        self._notifier = notifier
        self._clock = clock
        self._settings = settings
        self._hashing = hashing
        self._master = master
        self._sessions = ReadBatcher(db, session_store.staff_sessions)
        self._limits = SignInLimits(db, settings, master)

    async def login(self, email: str, password: str, actor: Actor
                    ) -> tuple[str, StaffPrincipal]:
        """Check the password and open a session; returns (cookie token, principal).

        Raises:
            AppError: ``unauthenticated`` for a wrong email or password (the same answer
                for both); ``rate_limited`` while a sign-in limit is reached (the right
                password included) or too many sign-ins from this address or for this
                email are already running; ``account_deactivated`` for the right password
                of a deactivated member (never for a wrong one: no enumeration).
        """
        email = normalise_email(email)
        address = actor.ip or "-"
        with self._limits.in_flight(email, address):
            async with self._db.read() as conn:
                member = await account_store.staff_by_email(conn, email)
            try:
                reservation = await self._limits.reserve(email, address, self._clock.now())
            except AppError:
                await self._audit_failure(member, actor, {"reason": "locked"})
                raise
            stored = member["password_hash"] if member is not None else None
            try:
                good = await self._hashing.verify(stored, password)
            except AppError:  # the hash pool is full: the attempt was never checked
                await self._limits.refund(reservation)
                raise
            if not good or member is None:
                reason = "unknown_email" if member is None else "wrong_password"
                await self._audit_failure(member, actor, {
                    "reason": reason, "failures": reservation.failures})
                raise AppError(ErrorCode.UNAUTHENTICATED, WRONG_LOGIN)
            if not member["active"]:  # the attempt stays counted, as a failure
                await self._audit_failure(member, actor, {"reason": "inactive"})
                raise AppError(ErrorCode.ACCOUNT_DEACTIVATED, DEACTIVATED)
            return await self._open_session(reservation, member, password, actor)

    async def _audit_failure(self, member, actor: Actor, details: dict) -> None:
        async with self._db.write() as conn:
            await audit.append(
                conn, self._clock, stream=_stream(member), actor=actor, action="auth.login",
                object_type="staff", object_id=member["id"] if member else None,
                outcome="denied", details=details)

    async def _open_session(self, reservation: Reservation, member, password: str,
                            actor: Actor) -> tuple[str, StaffPrincipal]:
        new_hash = None
        if self._hashing.needs_rehash(member["password_hash"]):
            new_hash = await self._hashing.hash(password)
        token, sid = new_session_token()
        now = self._clock.now()
        async with self._db.write() as conn:
            await SignInLimits.succeeded(conn, reservation)
            if new_hash is not None:
                await account_store.set_password_hash(conn, member["id"], new_hash)
            await session_store.insert_session(
                conn, id=sid, kind="staff", account_id=member["account_id"],
                staff_id=member["id"], created_at=now, last_seen_at=now,
                expires_at=now + timedelta(seconds=self._settings.session_absolute_seconds))
            await audit.append(
                conn, self._clock, stream=member["account_id"],
                actor=Actor("staff", member["id"], actor.ip, actor.request_id),
                action="auth.login", object_type="staff", object_id=member["id"],
                details={"rehashed": new_hash is not None})
        principal = StaffPrincipal(sid, member["id"], member["account_id"], member["role"],
                                   member["name"], member["email"])
        return token, principal

    async def authenticate(self, token: str | None, *, activity: bool = True
                           ) -> StaffPrincipal:
        """The principal behind a session cookie.

        Args:
            token: the cookie value.
            activity: whether this request is the user's doing and extends the idle limit.

        Raises:
            AppError(unauthenticated): no such session, or it ended or expired.
        """
        row = await self._live_session(token, activity)
        return _principal(row)

    async def authenticate_socket(self, token: str | None
                                  ) -> tuple[StaffPrincipal, bool, str]:
        """A socket's handshake (not user activity): the principal and its account's
        ``(portal_active, clinic_name)`` for the ``ready`` frame, read in one query.

        Raises:
            AppError(unauthenticated): as :meth:`authenticate`.
        """
        row = await self._live_session(token, False)
        return _principal(row), row["portal_active"], row["clinic_name"]

    async def _live_session(self, token: str | None, activity: bool):
        if not token:
            raise AppError(ErrorCode.UNAUTHENTICATED, "sign in first")
        sid = session_id(token)
        now = self._clock.now()
        row = await self._sessions.get(sid)  # shares a query with lookups arriving together
        if row is not None and not row["active"]:
            # Only the holder of this (signed-in) session learns why it ended.
            raise AppError(ErrorCode.ACCOUNT_DEACTIVATED, DEACTIVATED)
        if row is None or session_over(row, now, self._settings):
            raise AppError(ErrorCode.UNAUTHENTICATED, "session expired; sign in again")
        if activity and now - row["last_seen_at"] >= TOUCH_EVERY:
            async with self._db.write() as conn:
                await session_store.touch(conn, sid, now)
        return row

    async def logout(self, principal: StaffPrincipal, actor: Actor) -> None:
        """End the session; once that committed, its sockets close on every node."""
        async with self._db.write() as conn:
            await session_store.end_session(conn, principal.session_id, self._clock.now())
            await audit.append(conn, self._clock, stream=principal.account_id, actor=actor,
                               action="auth.logout", object_type="staff",
                               object_id=principal.staff_id)
        self._notifier.session_ended(principal.session_id)


def session_over(row, now: datetime, settings: Settings) -> bool:
    """Whether a session row has ended, or passed its idle or absolute limit."""
    idle = timedelta(seconds=settings.session_idle_seconds)
    return (row["ended_at"] is not None or now >= row["expires_at"]
            or now - row["last_seen_at"] >= idle)


def _principal(row) -> StaffPrincipal:
    return StaffPrincipal(row["id"], row["staff_id"], row["account_id"], row["role"],
                          row["name"], row["email"])


def _stream(member) -> str:
    return member["account_id"] if member is not None else audit.SYSTEM_STREAM
