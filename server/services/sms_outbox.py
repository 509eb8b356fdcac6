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
    def __init__(self, keyring: KeyRing, clock: Clock, notify_window_seconds: int) -> None:
        self._keyring = keyring
        self._clock = clock
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

