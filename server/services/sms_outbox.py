"""Putting SMS into the outbox, always inside the caller's transaction (the message and
its SMS commit together or not at all), and the secure-message notification rules.

A secure message's body never reaches the outbox: its notification holds the clinic's
name and a link, nothing else (``docs/security.md``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from server import crypto
from server.clock import Clock
from server.keys import KeyRing
from server.store import sms as sms_store

# The one notification template: the clinic's name and the link (checklist LINK-03).
NOTIFICATION = "{clinic}: you have a new secure message. View it at {url}"
# Staff's "Send a new link" (also only the clinic's name and the link).
NEW_LINK = "{clinic}: here is a new link to your secure messages: {url}"
HELP_REPLY = ("{clinic}: messages from your care team. Reply STOP to opt out, START to "
              "opt back in. For emergencies call 911.")


def outbox_context(account_id: str, ref: str) -> str:
    return f"sms/v1|{account_id}|{ref}"


class SmsOutbox:
    def __init__(self, keyring: KeyRing, clock: Clock, public_url: str,
                 notify_window_seconds: int) -> None:
        self._keyring = keyring
        self._clock = clock
        self._public_url = public_url.rstrip("/")
        self._window = timedelta(seconds=notify_window_seconds)

    async def queue(self, conn: AsyncConnection, *, account_id: str, conversation_id: str,
                    patient_id: str, message_id: str | None, kind: str, body: str) -> None:
        await sms_store.insert_outbox(conn, **await self.outbox_row(
            conn, account_id=account_id, conversation_id=conversation_id,
            patient_id=patient_id, message_id=message_id, kind=kind, body=body))

    async def outbox_row(self, conn: AsyncConnection, *, account_id: str,
                         conversation_id: str, patient_id: str, message_id: str | None,
                         kind: str, body: str) -> dict[str, Any]:
        """The outbox row :meth:`queue` inserts (for a caller inserting many at once)."""
        ref = str(uuid.uuid4())
        now = self._clock.now()
        return dict(
            ref=ref, account_id=account_id, conversation_id=conversation_id,
            patient_id=patient_id, message_id=message_id, kind=kind,
            body_enc=await self._keyring.seal(conn, account_id, body,
                                              outbox_context(account_id, ref)),
            status="pending", attempts=0, next_attempt_at=now, created_at=now)

    def should_notify(self, *, opted_out: bool, notified_at: datetime | None,
                      notified_seq: int, read_seq: int, now: datetime) -> bool:
        """The notification rule: never after STOP; else at most one per window while
        the patient has not read up to the last notified message."""
        if opted_out:
            return False  # no SMS of any kind after STOP
        return not (notified_at is not None and now - notified_at < self._window
                    and read_seq < notified_seq)

    @staticmethod
    def notification_text(clinic_name: str, url: str) -> str:
        return NOTIFICATION.format(clinic=clinic_name, url=url)

    async def new_link(self, conn: AsyncConnection, account_id: str, conversation_id: str,
                       ttl_hours: int, now: datetime, *, resent_by: str | None = None
                       ) -> str:
        """A secure link for the conversation; only its hash is stored. It revokes the
        conversation's older unverified links. ``resent_by``: the staff member whose
        "Send a new link" asked for it."""
        url, row = self.link_row(account_id, conversation_id, ttl_hours, now)
        await sms_store.insert_link(conn, **row, resent_by=resent_by)
        return url

    def link_row(self, account_id: str, conversation_id: str, ttl_hours: int,
                 now: datetime) -> tuple[str, dict[str, Any]]:
        """A new secure link's URL (holding the token) and the row to store (holding
        only its hash)."""
        token, token_hash = crypto.bearer_token()
        return f"{self._public_url}/s/{token}", dict(
            token_hash=token_hash, account_id=account_id, conversation_id=conversation_id,
            created_at=now, expires_at=now + timedelta(hours=ttl_hours))
