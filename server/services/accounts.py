"""Accounts, their settings, staff members and data-key rotation."""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy.exc import IntegrityError

from server import audit, phones
from server.audit import SYSTEM, Actor
from server.clock import Clock, rfc3339
from server.errors import AppError, ErrorCode, invalid, not_found
from server.passwords import PasswordHashing, check_policy
from server.protocol import AccountSettings, CreateStaffRequest, SettingsUpdate, StaffMember
from server.services.keys import KeyRing
from server.store import accounts as account_store
from server.store.db import Database

ROLES = ("admin", "staff")
DEFAULT_LINK_TTL_HOURS = 72
# The staff list is one page: a clinic has tens of members, this bounds a runaway one.
MAX_STAFF = 1000


class Accounts:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock,
                 hashing: PasswordHashing, default_region: str) -> None:
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
                sms_number=self._e164(sms_number) if sms_number else None,
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
        check_policy(password)
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
        """Deactivate a member of this account and end their sessions, in one transaction.
        Returns the member and the ended session ids (the caller closes their sockets).

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
        return msgspec.structs.replace(_member(row), active=False), ended

    async def reset_password(self, email: str, password: str, actor: Actor = SYSTEM) -> None:
        """Set a new password and end the member's sessions. Raises AppError(not_found)."""
        check_policy(password)
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
        values = {k: v for k, v in msgspec.structs.asdict(change).items()
                  if v is not msgspec.UNSET}
        if values.get("sms_number") is not None:
            values["sms_number"] = self._e164(values["sms_number"])
        if "clinic_name" in values:
            values["clinic_name"] = values["clinic_name"].strip()
            if not values["clinic_name"]:
                raise invalid("clinic_name: must not be blank")
        try:
            async with self._db.write() as conn:
                if values:
                    await account_store.update_account(conn, account_id, values)
                    await audit.append(
                        conn, self._clock, stream=account_id, actor=actor,
                        action="account.settings_changed", object_type="account",
                        object_id=account_id, details={"fields": ",".join(sorted(values))})
                row = await account_store.account(conn, account_id)
        except IntegrityError:
            raise AppError(ErrorCode.CONFLICT,
                           "sms_number: another account uses this number") from None
        return _settings(row)

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

    def _e164(self, number: str) -> str:
        try:
            return phones.to_e164(number, self._region)
        except AppError:
            raise invalid("sms_number: not a valid phone number") from None


def _settings(row) -> AccountSettings:
    return AccountSettings(portal_active=row["portal_active"], clinic_name=row["clinic_name"],
                           sms_number=row["sms_number"],
                           secure_link_ttl_hours=row["secure_link_ttl_hours"],
                           require_code=row["require_code"])


def _member(row) -> StaffMember:
    return StaffMember(id=row["id"], name=row["name"], email=row["email"], role=row["role"],
                       active=row["active"], created_at=rfc3339(row["created_at"]))
