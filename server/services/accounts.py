"""Accounts, their settings, staff members and data-key rotation.

A clinic's own SMS number is not a setting its admin types: replies to a number go to
the account holding it, so whoever sets it reads those replies. The operator assigns it
(``securechat set-sms-number``, ``create-admin --sms-number``); the shared sending
number can never be one account's (``server/sms/numbers.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec
from sqlalchemy.exc import IntegrityError

from server import audit, phones
from server.audit import SYSTEM, Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode, invalid, not_found
from server.keys import KeyRing
from server.notify import Notifier
from server.passwords import PasswordHashing, check_policy
from server.protocol import AccountSettings, CreateStaffRequest, SettingsUpdate, StaffMember
from server.store import accounts as account_store
from server.store import sessions as session_store
from server.store.db import Database

ROLES = ("admin", "staff")
DEFAULT_LINK_TTL_HOURS = 72
NUMBER_ASSIGNED_BY_OPERATOR = (
    "sms_number: the clinic's SMS number is assigned by the operator "
    "(securechat set-sms-number) and cannot be changed in settings")
# Asks the SMS provider whether its account holds an E.164 number.
NumberCheck = Callable[[str], Awaitable[bool]]
# The staff list is one page: a clinic has tens of members, this bounds a runaway one.
MAX_STAFF = 1000


class Accounts:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock,
                 hashing: PasswordHashing, notifier: Notifier, default_region: str,
                 reserved_numbers: frozenset[str] = frozenset()) -> None:
        self._notifier = notifier
        self._reserved = reserved_numbers
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._hashing = hashing
        self._region = default_region

    async def ensure_account(self, name: str, *, actor: Actor = SYSTEM,
                             portal_active: bool = False, sms_number: str | None = None
                             ) -> tuple[str, bool]:
        """The id of the account called ``name``, creating it (with its first data key)
        when missing. Returns (account id, created)."""
        async with self._db.write() as conn:
            existing = await account_store.account_by_name(conn, name)
            if existing is not None:
                return existing["id"], False
            account_id = str(uuid.uuid4())
            await account_store.insert_account(
                conn, id=account_id, name=name, clinic_name=name, portal_active=portal_active,
                sms_number=self._clinic_number(sms_number) if sms_number else None,
                secure_link_ttl_hours=DEFAULT_LINK_TTL_HOURS, created_at=self._clock.now())
            key_id = await self._keyring.create_key(conn, account_id)
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="account.created", object_type="account",
                               object_id=account_id, details={"key_id": key_id})
        return account_id, True

    async def create_staff(self, account_id: str, *, email: str, name: str, role: str,
                           password: str, actor: Actor = SYSTEM) -> str:
        """Add a staff member. Raises AppError(conflict) when the email is taken."""
        if role not in ROLES:
            raise invalid(f"role: must be one of {', '.join(ROLES)}")
        check_policy(password, (email, name, *await self._account_names(account_id)))
        password_hash = await self._hashing.hash(password)
        staff_id = str(uuid.uuid4())
        try:
            async with self._db.write() as conn:
                await account_store.insert_staff(
                    conn, id=staff_id, account_id=account_id, email=email.strip().lower(),
                    name=name, role=role, password_hash=password_hash, active=True,
                    created_at=self._clock.now())
                await audit.append(conn, self._clock, stream=account_id, actor=actor,
                                   action="staff.created", object_type="staff",
                                   object_id=staff_id, details={"role": role})
        except IntegrityError:
            raise AppError(ErrorCode.CONFLICT, "a staff member with this email exists") from None
        return staff_id

    async def staff(self, account_id: str) -> list[StaffMember]:
        """The account's staff members, active or not, by name."""
        async with self._db.read() as conn:
            rows = await account_store.account_staff(conn, account_id, MAX_STAFF)
        return [_member(row) for row in rows]

    async def add_staff(self, account_id: str, body: CreateStaffRequest, actor: Actor
                        ) -> StaffMember:
        """An admin adds a member. Raises AppError: ``invalid_request`` (blank name, weak
        password), ``conflict`` (the email is taken, in any account)."""
        name = body.name.strip()
        if not name:
            raise invalid("name: must not be blank")
        staff_id = await self.create_staff(account_id, email=body.email, name=name,
                                           role=body.role, password=body.password,
                                           actor=actor)
        async with self._db.read() as conn:
            row = await account_store.account_staff_member(conn, account_id, staff_id)
        return _member(row)

    async def deactivate_staff(self, account_id: str, staff_id: str, actor: Actor
                               ) -> tuple[StaffMember, list[str]]:
        """Deactivate a member of this account and end their sessions, in one transaction;
        once it committed, their sockets close on every node. Returns the member and the
        ended session ids.

        Raises:
            AppError: ``invalid_request`` for oneself (an admin cannot lock themselves
                out), ``not_found`` for an id that is not a member of this account.
        """
        if staff_id == actor.id:
            raise invalid("you cannot deactivate yourself")
        async with self._db.write() as conn:
            row = await account_store.account_staff_member(conn, account_id, staff_id)
            if row is None:
                raise not_found("staff member")
            await account_store.deactivate_staff(conn, staff_id)
            ended = await account_store.end_staff_sessions(conn, staff_id, self._clock.now())
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="staff.deactivated", object_type="staff",
                               object_id=staff_id, details={"ended_sessions": len(ended)})
        for session_id in ended:
            self._notifier.session_ended(session_id)
        return msgspec.structs.replace(_member(row), active=False), ended

    async def reset_password(self, email: str, password: str, actor: Actor = SYSTEM) -> None:
        """Set a new password and end the member's sessions. Raises AppError(not_found)."""
        async with self._db.read() as conn:
            member = await account_store.staff_by_email(conn, email.strip().lower())
        names = () if member is None else (
            member["name"], *await self._account_names(member["account_id"]))
        check_policy(password, (email, *names))
        password_hash = await self._hashing.hash(password)
        async with self._db.write() as conn:
            member = await account_store.staff_by_email(conn, email.strip().lower())
            if member is None:
                raise AppError(ErrorCode.NOT_FOUND, "no such staff member")
            await account_store.set_password_hash(conn, member["id"], password_hash)
            await account_store.end_staff_sessions(conn, member["id"], self._clock.now())
            await audit.append(conn, self._clock, stream=member["account_id"], actor=actor,
                               action="staff.password_reset", object_type="staff",
                               object_id=member["id"])

    async def _account_names(self, account_id: str) -> tuple[str, ...]:
        """The account's name and clinic name: words a member's password must not hold."""
        async with self._db.read() as conn:
            row = await account_store.account(conn, account_id)
        return () if row is None else (row["name"], row["clinic_name"])

    async def email_taken(self, email: str) -> bool:
        async with self._db.read() as conn:
            return await account_store.staff_by_email(conn, email.strip().lower()) is not None

    async def settings(self, account_id: str) -> AccountSettings:
        async with self._db.read() as conn:
            row = await account_store.account(conn, account_id)
        if row is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such account")
        return _settings(row)

    async def update_settings(self, account_id: str, change: SettingsUpdate, actor: Actor
                              ) -> AccountSettings:
        """Apply an admin's change; once it committed, every open console of the
        account, on every node, follows (and with the portal off, patient sockets close).
        ``sms_number`` may be sent only unchanged (a form that sends every field); any
        other value changes nothing and raises AppError(forbidden): the operator assigns
        it (:meth:`assign_sms_number`)."""
        values = {k: v for k, v in msgspec.structs.asdict(change).items()
                  if v is not msgspec.UNSET}
        requested_number = values.pop("sms_number", msgspec.UNSET)
        if "clinic_name" in values:
            values["clinic_name"] = values["clinic_name"].strip()
            if not values["clinic_name"]:
                raise invalid("clinic_name: must not be blank")
        async with self._db.write() as conn:
            if requested_number is not msgspec.UNSET:
                current = await account_store.account(conn, account_id)
                if not self._same_number(requested_number, current["sms_number"]):
                    raise AppError(ErrorCode.FORBIDDEN, NUMBER_ASSIGNED_BY_OPERATOR)
            if values:
                await account_store.update_account(conn, account_id, values)
                await audit.append(
                    conn, self._clock, stream=account_id, actor=actor,
                    action="account.settings_changed", object_type="account",
                    object_id=account_id, details={"fields": ",".join(sorted(values))})
            if values.get("portal_active") is False:
                # Portal off ends patient access at once: every patient session of the
                # account, in this transaction (their sockets close once told below).
                ended = await session_store.end_account_patient_sessions(
                    conn, account_id, self._clock.now())
                if ended:
                    await audit.append(
                        conn, self._clock, stream=account_id, actor=actor,
                        action="patient.sessions_ended", object_type="account",
                        object_id=account_id, details={"count": len(ended),
                                                       "reason": "portal_off"})
            row = await account_store.account(conn, account_id)
        settings = _settings(row)
        self._notifier.account_changed(account_id, settings.portal_active,
                                       settings.clinic_name)
        return settings

    async def checked_number(self, number: str, verify: NumberCheck | None = None) -> str:
        """``number`` in E.164 if a clinic may hold it as its own: a valid number, not
        the shared sending number, and held by the provider account (``verify``, when
        given). Raises AppError(invalid_request) naming ``sms_number``."""
        e164 = self._clinic_number(number)
        if verify is not None and not await verify(e164):
            raise invalid("sms_number: the SMS provider account does not hold this number")
        return e164

    async def account_id(self, name: str) -> str:
        """The id of the account called ``name``. Raises AppError(not_found)."""
        async with self._db.read() as conn:
            account = await account_store.account_by_name(conn, name)
        if account is None:
            raise not_found("account")
        return account["id"]

    async def assign_sms_number(self, account_id: str, number: str | None,
                                actor: Actor = SYSTEM, verify: NumberCheck | None = None
                                ) -> str | None:
        """The operator gives the account its own SMS number (None: none; it then texts
        from the shared number). Returns the number in E.164.

        Raises:
            AppError: ``invalid_request`` (see :meth:`checked_number`), ``conflict``
                (another account holds it).
        """
        e164 = await self.checked_number(number, verify) if number else None
        try:
            async with self._db.write() as conn:
                await account_store.update_account(conn, account_id, {"sms_number": e164})
                await audit.append(conn, self._clock, stream=account_id, actor=actor,
                                   action="account.sms_number_assigned",
                                   object_type="account", object_id=account_id,
                                   details={"cleared": e164 is None})
        except IntegrityError:
            raise AppError(ErrorCode.CONFLICT,
                           "sms_number: another account uses this number") from None
        return e164

    async def rotate_keys(self, actor: Actor = SYSTEM) -> dict[str, int]:
        """Give every account a new active data key; returns {account id: new key id}.

        Old keys stay, so everything they sealed still opens.
        """
        rotated = {}
        async with self._db.write() as conn:
            for account_id in await account_store.account_ids(conn):
                key_id = await self._keyring.create_key(conn, account_id)
                await audit.append(conn, self._clock, stream=account_id, actor=actor,
                                   action="key.rotated", object_type="data_key",
                                   object_id=str(key_id))
                rotated[account_id] = key_id
        for account_id in rotated:
            self._keyring.forget_active(account_id)
        return rotated

    def _clinic_number(self, number: str) -> str:
        """``number`` in E.164, if a clinic may hold it as its own."""
        try:
            e164 = phones.to_e164(number, self._region)
        except AppError:
            raise invalid("sms_number: not a valid phone number") from None
        if e164 in self._reserved:
            raise invalid("sms_number: this is the shared sending number, which no "
                          "account can hold as its own")
        return e164

    def _same_number(self, requested: str | None, current: str | None) -> bool:
        if requested is None or current is None:
            return requested is current
        try:
            return phones.to_e164(requested, self._region) == current
        except AppError:
            return False


def _settings(row) -> AccountSettings:
    return AccountSettings(portal_active=row["portal_active"], clinic_name=row["clinic_name"],
                           sms_number=row["sms_number"],
                           secure_link_ttl_hours=row["secure_link_ttl_hours"],
                           require_code=row["require_code"])


def _member(row) -> StaffMember:
    return StaffMember(id=row["id"], name=row["name"], email=row["email"], role=row["role"],
                       active=row["active"], created_at=rfc3339(row["created_at"]))
