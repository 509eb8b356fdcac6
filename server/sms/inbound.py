"""What the provider tells us: inbound SMS and delivery status callbacks.

Both arrive from the Twilio webhooks (after their signature check) or from the demo's
phone page, through the same code. Inbound SMS are routed to the account by ``To`` and
to the patient by the blind index of ``From``; a number no patient has opens a new
conversation with a patient marked unknown. Status callbacks may come twice or out of
order: a status never moves backwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from server import phones
from server.clock import Clock, rfc3339
from server.errors import AppError
from server.protocol import Sender
from server.realtime import events
from server.realtime.sending import message_event
from server.services.messaging import Messaging
from server.services.patients import Patients
from server.sms.base import OPTED_OUT_ERROR
from server.store import sms as sms_store
from server.store.db import Database

log = logging.getLogger("securechat.sms")

UNKNOWN_NAME = "Unknown sender"
# Twilio's MessageStatus values for outbound messages, mapped to the thread's statuses.
CALLBACK_STATUS = {"queued": "queued", "accepted": "queued", "scheduled": "queued",
                   "sending": "sent", "sent": "sent", "delivered": "delivered",
                   "undelivered": "undelivered", "failed": "failed", "canceled": "failed"}


class InboundSms:
    def __init__(self, *, db: Database, clock: Clock, messaging: Messaging, patients: Patients,
                 default_region: str, publish: Callable[[events.AnyEvent], None],
                 node_id: str, wake_sms: Callable[[], None] = lambda: None) -> None:
        self._wake_sms = wake_sms
        self._db = db
        self._clock = clock
        self._messaging = messaging
        self._patients = patients
        self._region = default_region
        self._publish = publish
        self._node = node_id

    async def receive(self, *, to: str, from_: str, body: str, sid: str) -> bool:
        """Store one inbound SMS and fan it out. False when ``To`` is no account's number
        (the webhook still answers 200: Twilio must not retry it forever)."""
        try:
            to_number = phones.to_e164(to, self._region)
            from_number = phones.to_e164(from_, self._region)
        except AppError:
            log.warning("inbound sms with an unreadable number", extra={"reason": "number"})
            return False
        async with self._db.read() as conn:
            account = await sms_store.account_by_number(conn, to_number)
        if account is None:
            log.warning("inbound sms for no account", extra={"reason": "unknown_to"})
            return False
        account_id = account["id"]
        patient_id, conversation_id, name = await self._patients.for_phone(
            account_id, from_number, UNKNOWN_NAME)
        result = await self._messaging.receive_sms(
            account_id, conversation_id, Sender("patient", patient_id, name), sid, body)
        if not result.duplicate:
            self._publish(message_event(self._node, account_id, result))
            self._wake_sms()  # a HELP reply may be waiting
        return True

    async def status(self, *, sid: str, provider_status: str, error_code: str | None
                     ) -> bool:
        """Apply a delivery status callback; False when the sid is unknown."""
        status = CALLBACK_STATUS.get(provider_status)
        async with self._db.write() as conn:
            row = await sms_store.by_provider_sid(conn, sid)
            if row is None or status is None:
                return row is not None
            if error_code == OPTED_OUT_ERROR:  # e.g. a Messaging Service reports it late
                await sms_store.set_opted_out(conn, row["patient_id"], True)
            if row["kind"] != "message" or row["message_id"] is None:
                return True  # notifications and help replies have no thread status
            changed = await sms_store.advance_message_status(conn, row["message_id"], status)
        if changed:
            self._publish(events.StatusEvent(
                self._node, row["account_id"], row["conversation_id"], row["message_id"],
                status, rfc3339(self._clock.now()),
                error_code if status in ("failed", "undelivered") else None))
        return True
