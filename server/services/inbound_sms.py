"""What the provider tells us: inbound SMS and delivery status callbacks.

Both arrive from the Twilio webhooks (after their signature check) or from the demo's
phone page, through the same code. An inbound SMS to a clinic's own number goes to that
clinic, and to the patient by the blind index of ``From`` (a number no patient has opens
a new conversation with a patient marked unknown); one to the shared sending number goes
to the clinic that texted that phone from it last (``server/sms/routing.py``). Its
``MessageSid`` must have Twilio's shape (it is the de-duplication key, so a replayed
webhook with shifted parameters cannot pass for a new message), and a body longer than
Twilio's 1,600 characters is cut and marked. Status callbacks may come twice or out of
order: a status never moves backwards.
"""

from __future__ import annotations

import logging
import re

from server import events, phones
from server.clock import Clock, rfc3339
from server.errors import AppError, invalid
from server.notify import Notifier
from server.protocol import MessageStatus, Sender
from server.services.messaging import Messaging
from server.services.opt_out import opt_out_event, set_opt_out
from server.services.patients import Patients
from server.services.sending import message_event
from server.sms import keywords
from server.sms.base import OPTED_OUT_ERROR
from server.sms.routing import InboundRouter, Thread
from server.store import sms as sms_store
from server.store.db import Database

log = logging.getLogger("securechat.sms")

UNKNOWN_NAME = "Unknown sender"
# Twilio's message SIDs: "SM" (SMS) or "MM" (MMS) and 32 hex digits.
MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-f]{32}")
# Twilio delivers at most 1,600 characters per inbound message; anything longer did not
# come from a handset. It is kept (it may be the patient's words) but cut and marked.
MAX_BODY = 1600
CUT_MARK = " […cut: longer than 1,600 characters]"
# Twilio's MessageStatus values for outbound messages, mapped to the thread's statuses.
CALLBACK_STATUS = {
    "queued": MessageStatus.QUEUED, "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED, "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT, "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED, "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED}


class InboundSms:
    def __init__(self, *, db: Database, clock: Clock, messaging: Messaging, patients: Patients,
                 default_region: str, notifier: Notifier, shared_number: str) -> None:
        self._notifier = notifier
        self._router = InboundRouter(db, shared_number, patients.phone_index)
        self._db = db
        self._clock = clock
        self._messaging = messaging
        self._patients = patients
        self._region = default_region

    async def receive(self, *, to: str, from_: str, body: str, sid: str) -> bool:
        """Store one inbound SMS and fan it out. False when it belongs to no account:
        ``To`` is no account's number, or it is the shared number and no account texted
        ``From`` from it (the webhook still answers 200: Twilio must not retry it).

        Raises:
            AppError: ``invalid_request`` when ``sid`` is not a Twilio message SID.
        """
        check_sid(sid)
        if len(body) > MAX_BODY:
            log.warning("inbound sms cut to 1,600 characters", extra={"reason": "too_long"})
            body = body[:MAX_BODY] + CUT_MARK
        try:
            to_number = phones.to_e164(to, self._region)
            from_number = phones.to_e164(from_, self._region)
        except AppError:
            log.warning("inbound sms with an unreadable number", extra={"reason": "number"})
            return False
        others: tuple[Thread, ...] = ()
        if to_number == self._router.shared_number:
            route = await self._router.shared_number_route(from_number)
            if route is None:
                log.warning("inbound sms to the shared number from a phone no account "
                            "texted", extra={"reason": "unknown_from"})
                return False
            account_id, others = route.thread.account_id, route.others
        else:
            found = await self._router.own_number_account(to_number)
            if found is None:
                log.warning("inbound sms for no account", extra={"reason": "unknown_to"})
                return False
            account_id = found
        patient_id, conversation_id, name = await self._patients.for_phone(
            account_id, from_number, UNKNOWN_NAME)
        result = await self._messaging.receive_sms(
            account_id, conversation_id, Sender("patient", patient_id, name), sid, body)
        if not result.duplicate:
            node = self._notifier.node_id
            self._notifier.publish(message_event(node, account_id, result))
            if result.opt_out is not None:  # STOP/START changed the patient's opt-out
                self._notifier.publish(opt_out_event(node, result.opt_out))
            self._notifier.wake_sms()  # a HELP reply may be waiting
            await self._opt_out_elsewhere(others, keywords.keyword(body))
        return True

    async def _opt_out_elsewhere(self, threads: tuple[Thread, ...],
                                 word: keywords.Keyword | None) -> None:
        """A STOP (or START) to the shared number takes effect in every other account
        that texted the phone from it, through the same opt-out path as in the thread
        it landed in, in one transaction; each change is published after the commit."""
        if not threads or word not in (keywords.Keyword.OPT_OUT, keywords.Keyword.OPT_IN):
            return
        async with self._db.write() as conn:
            changes = [await set_opt_out(conn, self._clock, account_id=thread.account_id,
                                         patient_id=thread.patient_id, cause="keyword",
                                         opted_out=word is keywords.Keyword.OPT_OUT)
                       for thread in threads]
        for change in changes:
            if change is not None:
                self._notifier.publish(opt_out_event(self._notifier.node_id, change))

    async def status(self, *, sid: str, provider_status: str, error_code: str | None
                     ) -> bool:
        """Apply a delivery status callback; False when the sid is unknown."""
        status = CALLBACK_STATUS.get(provider_status)
        async with self._db.write() as conn:
            row = await sms_store.by_provider_sid(conn, sid)
            if row is None or status is None:
                return row is not None
            opt_out = None
            if error_code == OPTED_OUT_ERROR:  # e.g. a Messaging Service reports it late
                opt_out = await set_opt_out(conn, self._clock, account_id=row["account_id"],
                                            patient_id=row["patient_id"], opted_out=True,
                                            cause="provider")
            # Notifications and help replies have no thread status.
            changed = row["kind"] == "message" and row["message_id"] is not None and \
                await sms_store.advance_message_status(conn, row["message_id"], status)
        node = self._notifier.node_id
        if opt_out is not None:
            self._notifier.publish(opt_out_event(node, opt_out))
        if changed:
            self._notifier.publish(events.StatusEvent(
                node, row["account_id"], row["conversation_id"], row["message_id"],
                status, rfc3339(self._clock.now()),
                error_code if status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
                else None))
        return True


def check_sid(sid: str) -> None:
    """Raises AppError(invalid_request) unless ``sid`` has the shape of a Twilio
    message SID."""
    if not MESSAGE_SID.fullmatch(sid):
        raise invalid("MessageSid: not a Twilio message SID")
