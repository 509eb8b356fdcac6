"""Secure links and the patient's identity check.

* A link's token (256 bits, URL-safe) exists only in the SMS; the store keeps its
  SHA-256. It is bound to one conversation and expires after the account's
  ``secure_link_ttl_hours``; staff can revoke it.
* Opening a link (GET) consumes nothing: link previews and scanners fetch it.
* Verification asks for the date of birth (compared in constant time, never logged) and,
  when the link was sent more than 24 hours ago or the account always wants it, a
  one-time code sent by SMS (6 digits, 10 minutes, single use, stored as a keyed hash).
  Wrong dates and wrong codes count together, per conversation (over all its links, so
  a new link brings no new tries): the fifth locks every link of the conversation for
  good (asking for a new code does not reset the count), is audited and tells the
  staff; that fifth try is already answered ``locked``. Only staff's "Send a new link"
  (:meth:`SecureLinks.resend`) gives the patient a fresh set of tries, on the new link.
  At most :data:`MAX_CODES_PER_HOUR` code SMS go out per link in any hour (someone who
  knows the date of birth cannot flood the phone).
* A new link revokes the conversation's older unverified links.
* After the patient pressed "End session", the links issued before it open only with the
  one-time code as well (someone at the same browser cannot get back in with the date of
  birth alone).
* While the account's patient portal is off no link opens: it answers a neutral "not
  available, please call the clinic" page.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

import msgspec

from server import audit, crypto
from server.audit import Actor
from server.clock import Clock
from server.errors import AppError, ErrorCode, invalid, not_found
from server.keys import KeyRing
from server.notify import Notifier
from server.patient_auth import PatientPrincipal, PatientSessions
from server.services.sms_outbox import NEW_LINK, SmsOutbox
from server.store import links as link_store
from server.store import messages as message_store
from server.store import patients as patient_store
from server.store import sessions as session_store
from server.store import sms as sms_store
from server.store.db import Database

MAX_FAILURES = 5  # issue 5: five wrong tries lock the link
CODE_TTL = timedelta(minutes=10)
CODE_AFTER = timedelta(hours=24)  # links older than this always need a code
MAX_CODES_PER_HOUR = 5
# Staff's "Send a new link": each is an SMS the clinic pays for and the patient receives;
# five an hour is more than a patient on the phone with the front desk needs.
MAX_RESENDS_PER_HOUR = 5
RESEND_WINDOW = timedelta(hours=1)
CODE_SMS = "{clinic}: your verification code is {code}. It expires in 10 minutes."
NO_LONGER_VALID = "this link is no longer valid; please ask your clinic for a new one"
PORTAL_OFF = "secure messaging is not available; please call your clinic"


class LinkState(enum.Enum):
    VALID = "valid"
    LOCKED = "locked"
    GONE = "gone"  # unknown, expired or revoked: the patient is not told which
    UNAVAILABLE = "unavailable"  # the account's patient portal is off


class CodeSent(msgspec.Struct, frozen=True):
    """The date of birth was right; a code is on its way by SMS."""


token_hash = crypto.token_digest  # what the store keeps of a link's token


class LinkMint:
    """Minting a secure link: its 256-bit token travels only in the URL; the row to store
    holds the token's hash (docs/security.md "Secure links and the patient's check")."""

    def __init__(self, public_url: str) -> None:
        self._public_url = public_url.rstrip("/")

    def mint(self, account_id: str, conversation_id: str, ttl_hours: int, now: datetime
             ) -> tuple[str, dict[str, Any]]:
        """A new link's URL (holding the token) and its row (holding only the hash).
        Storing it revokes the conversation's older unverified links."""
        token, token_hash = crypto.bearer_token()
        return f"{self._public_url}/s/{token}", dict(
            token_hash=token_hash, account_id=account_id, conversation_id=conversation_id,
            created_at=now, expires_at=now + timedelta(hours=ttl_hours))


class SecureLinks:
    def __init__(self, *, db: Database, keyring: KeyRing, clock: Clock, sms: SmsOutbox,
                 mint: LinkMint, sessions: PatientSessions, notifier: Notifier) -> None:
        self._mint = mint
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._sms = sms
        self._sessions = sessions
        self._notifier = notifier

    async def state(self, token: str) -> tuple[LinkState, str]:
        """What a GET of the link may show, and the clinic's name; changes nothing."""
        async with self._db.read() as conn:
            row = await link_store.link(conn, token_hash(token))
        return self._state(row), row["clinic_name"] if row is not None else ""

    def _state(self, row) -> LinkState:
        if row is None or self._clock.now() >= row["expires_at"]:
            return LinkState.GONE
        # A locked link stays locked (a later revocation does not turn it into "not
        # valid"): the patient is told the truth about the link they hold.
        if row["revoked_at"] is not None and row["locked_at"] is None:
            return LinkState.GONE
        if not row["portal_active"]:
            return LinkState.UNAVAILABLE
        if row["locked_at"] is not None or row["link_failures"] >= MAX_FAILURES:
            return LinkState.LOCKED
        return LinkState.VALID

    async def verify(self, token: str, date_of_birth: str, code: str | None, actor: Actor
                     ) -> tuple[str, PatientPrincipal] | CodeSent:
        """Check the patient; returns (session cookie token, principal), or CodeSent.

        Raises:
            AppError: ``not_found`` (unknown, expired or revoked link),
                ``portal_inactive`` (the account's portal is off), ``locked``,
                ``invalid_verification`` (wrong date or code; the answer does not say
                which; the try that locks the link answers ``locked``), ``opted_out`` (a
                code is needed but the number replied STOP), ``rate_limited`` (too many
                codes asked for this link in the last hour).
        """
        digest = token_hash(token)
        now = self._clock.now()
        async with self._db.write() as conn:
            row = await link_store.link(conn, digest, lock=True)
            state = self._state(row)
            if state is LinkState.GONE:
                raise AppError(ErrorCode.NOT_FOUND, NO_LONGER_VALID)
            if state is LinkState.UNAVAILABLE:
                raise AppError(ErrorCode.PORTAL_INACTIVE, PORTAL_OFF)
            if state is LinkState.LOCKED:
                raise AppError(ErrorCode.LOCKED, "this link is locked; ask your clinic")
            account_id, patient_id = row["account_id"], row["patient_id"]
            stored_dob = await self._keyring.open(
                conn, account_id, row["dob_enc"],
                crypto.patient_field_context(account_id, patient_id, "dob"))
            dob_ok = hmac.compare_digest(stored_dob.encode(), date_of_birth.strip().encode())
            needs_code = (row["require_code"] or now - row["created_at"] > CODE_AFTER
                          or row["session_ended_at"] is not None)
            sent = locked = failed = False
            if dob_ok and needs_code and not code:
                if row["opted_out"]:
                    raise AppError(ErrorCode.OPTED_OUT, "we cannot text you a code; "
                                   "reply START to the clinic's number, then try again")
                await self._check_code_rate(conn, digest, now)
                await self._send_code(conn, row, digest, now)
                sent = True
            else:
                # A code is spent only with the right date (a typo in the date does not
                # burn it); either wrong counts one failure.
                code_ok = not needs_code or (
                    dob_ok and await self._use_code(conn, digest, code or "", now))
                if not (dob_ok and code_ok):
                    locked = await self._fail(conn, row, digest, now, actor)
                    failed = True
                else:
                    await link_store.mark_verified(conn, digest, now)
                    await audit.append(conn, self._clock, stream=account_id, actor=actor,
                                       action="link.verified", object_type="conversation",
                                       object_id=row["conversation_id"],
                                       details={"with_code": needs_code})
        if sent:
            self._notifier.wake_sms()
            return CodeSent()
        if locked:  # told after the commit: the lock is durable by then
            self._notifier.notice(account_id, row["conversation_id"], "link_locked")
            raise AppError(ErrorCode.LOCKED, "this link is now locked; ask your clinic")
        if failed:
            raise AppError(ErrorCode.INVALID_VERIFICATION,
                           "that does not match our records; check and try again")
        return await self._sessions.open(account_id, patient_id, row["conversation_id"],
                                         actor)

    async def _check_code_rate(self, conn, digest: str, now) -> None:
        window = timedelta(hours=1)
        sent = await link_store.codes_sent_since(conn, digest, now - window)
        if len(sent) >= MAX_CODES_PER_HOUR:
            wait = sent[-MAX_CODES_PER_HOUR] + window - now
            raise AppError(ErrorCode.RATE_LIMITED,
                           "too many codes were sent for this link; try again later",
                           retry_after_ms=max(1000, int(wait.total_seconds() * 1000)))

    async def _send_code(self, conn, row, digest: str, now) -> None:
        code = f"{secrets.randbelow(10**6):06d}"
        await link_store.insert_code(conn, token_hash=digest, created_at=now,
                                     expires_at=now + CODE_TTL,
                                     code_hash=self._code_hash(digest, code))
        await self._sms.queue(conn, account_id=row["account_id"],
                              conversation_id=row["conversation_id"],
                              patient_id=row["patient_id"], message_id=None, kind="code",
                              body=CODE_SMS.format(clinic=row["clinic_name"], code=code))
        await audit.append(conn, self._clock, stream=row["account_id"], actor=audit.SYSTEM,
                           action="link.code_sent", object_type="conversation",
                           object_id=row["conversation_id"])

    async def _use_code(self, conn, digest: str, code: str, now) -> bool:
        expected = self._code_hash(digest, code.strip())
        for candidate in await link_store.live_codes(conn, digest, now):
            if hmac.compare_digest(candidate["code_hash"], expected):
                return await link_store.use_code(conn, candidate["id"], now)
        return False

    def _code_hash(self, digest: str, code: str) -> str:
        return self._keyring.master.blind_index("link-code", digest, code)

    async def _fail(self, conn, row, digest: str, now, actor: Actor) -> bool:
        """Count a wrong try; returns whether it locked the link."""
        failures = await link_store.add_failure(conn, digest, row["conversation_id"], now,
                                                MAX_FAILURES)
        locked = failures >= MAX_FAILURES
        await audit.append(conn, self._clock, stream=row["account_id"], actor=actor,
                           action="link.locked" if locked else "link.verify_failed",
                           object_type="conversation", object_id=row["conversation_id"],
                           outcome="denied", details={"failures": failures})
        return locked

    async def revoke(self, account_id: str, conversation_id: str, actor: Actor
                     ) -> tuple[int, list[str]]:
        """Revoke every link of the conversation and end its patient sessions; once that
        committed, their sockets close on every node. Returns (links revoked, ids of the
        sessions ended).

        Raises:
            AppError: ``not_found`` (no such conversation in this account).
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            if await patient_store.conversation(conn, account_id, conversation_id) is None:
                raise not_found("conversation")
            count = await link_store.revoke_conversation_links(conn, account_id,
                                                               conversation_id, now)
            ended = await session_store.end_patient_sessions(conn, conversation_id, now)
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="link.revoked", object_type="conversation",
                               object_id=conversation_id,
                               details={"count": count, "sessions": len(ended)})
        for session_id in ended:
            self._notifier.session_ended(session_id)
        return count, ended

    async def resend(self, account_id: str, conversation_id: str, staff_id: str,
                     actor: Actor) -> None:
        """Staff's "Send a new link": a fresh link by SMS now, whatever the notification
        window. It revokes the older unverified links (a locked one stays locked) and
        gives the patient a fresh set of tries; audited (no PHI: ids only). Once that
        committed, the SMS worker is woken and every console of the account is told
        (``link_resent``), so a lock banner elsewhere stops asking for a new link.

        Raises:
            AppError: ``not_found`` (no such conversation in this account),
                ``portal_inactive``, ``invalid_request`` (a patient from an unknown
                number, who has no date of birth to verify with), ``opted_out`` (no SMS
                after STOP), ``rate_limited`` (:data:`MAX_RESENDS_PER_HOUR` already in
                the last hour; ``retry_after_ms`` says when the next one may go).
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            # Locked until commit: two resends at once cannot both pass the limit.
            convo = (await message_store.lock_conversations(conn, [conversation_id])
                     ).get(conversation_id)
            if convo is None or convo["account_id"] != account_id:
                raise not_found("conversation")
            if not convo["portal_active"]:
                raise AppError(ErrorCode.PORTAL_INACTIVE,
                               "secure links need the patient portal, which is off")
            if convo["unknown"]:
                raise invalid("this patient came from an unknown number and has no date "
                              "of birth on file to verify with; add their details first")
            if convo["opted_out"]:
                raise AppError(ErrorCode.OPTED_OUT,
                               "the patient replied STOP: no SMS can be sent")
            sent = await link_store.resends_since(conn, conversation_id,
                                                  now - RESEND_WINDOW)
            if len(sent) >= MAX_RESENDS_PER_HOUR:
                wait = sent[-MAX_RESENDS_PER_HOUR] + RESEND_WINDOW - now
                raise AppError(ErrorCode.RATE_LIMITED,
                               f"{MAX_RESENDS_PER_HOUR} new links were sent in the last "
                               "hour; try again later",
                               retry_after_ms=max(1000, int(wait.total_seconds() * 1000)))
            url, link = self._mint.mint(account_id, conversation_id,
                                        convo["secure_link_ttl_hours"], now)
            await sms_store.insert_link(conn, **link, resent_by=staff_id)
            await link_store.reset_failures(conn, conversation_id)
            await self._sms.queue(conn, account_id=account_id,
                                  conversation_id=conversation_id,
                                  patient_id=convo["patient_id"], message_id=None,
                                  kind="link", body=NEW_LINK.format(
                                      clinic=convo["clinic_name"], url=url))
            await audit.append(conn, self._clock, stream=account_id, actor=actor,
                               action="link.resent", object_type="conversation",
                               object_id=conversation_id)
        self._notifier.wake_sms()
        self._notifier.notice(account_id, conversation_id, "link_resent")
