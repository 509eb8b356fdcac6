"""The outbox worker: sends what the outbox holds, retries what failed for a while.

* Rows are claimed with a lease (``SKIP LOCKED`` on PostgreSQL), one per conversation at
  a time and oldest first, so several nodes never send one row at once and a
  conversation's SMS keep their order. A node that dies mid-send leaves a lease that
  runs out, and the row is sent again (at-least-once: a crash between the provider's
  answer and the commit can repeat one SMS; Twilio has no idempotency key).
* Transient failures (5xx, 429, timeouts) are retried with exponential backoff and full
  jitter, up to ``sms_max_attempts``; permanent ones (4xx) fail at once; 21610 also opts
  the patient out. Every change reaches the thread as a ``status`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from server import events
from server.clock import Clock, rfc3339
from server.crypto import DecryptError, patient_field_context
from server.errors import ErrorCode
from server.keys import KeyRing
from server.metrics import Metrics
from server.protocol import MessageStatus
from server.services.opt_out import opt_out_event, set_opt_out
from server.services.sms_outbox import outbox_context
from server.settings import Settings
from server.sms.base import OPTED_OUT_ERROR, PermanentFailure, SmsProvider, TransientFailure
from server.sms.numbers import shared_number
from server.store import sms as sms_store
from server.store.db import Database

log = logging.getLogger("securechat.sms")

CLAIM_BATCH = 20  # rows per claim; each is a different conversation, sent concurrently
# Recording an SMS the provider took: 6 tries over ~3 s (0.1 s doubling) ride out a
# dropped connection, far inside the row's 60 s lease.
RECORD_ATTEMPTS = 6
RECORD_RETRY_SECONDS = 0.1
LEASE = timedelta(seconds=60)  # far above one provider call (10 s timeout)
POLL_SECONDS = 1.0  # also woken at once by ``wake()`` when this node queues an SMS
# How long ``stop`` lets the pass in progress finish: one provider call's timeout (10 s)
# plus its two store writes. Past it the pass is cancelled and its rows' leases run out.
STOP_SECONDS = 12.0
BACKOFF_CAP_SECONDS = 300.0


class OutboxWorker:
    def __init__(self, *, db: Database, keyring: KeyRing, clock: Clock, settings: Settings,
                 provider: SmsProvider, metrics: Metrics,
                 publish: Callable[[events.StatusEvent], None], node_id: str) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._settings = settings
        self._provider = provider
        self._metrics = metrics
        self._publish = publish
        self._node = node_id
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sms-outbox")

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Claim nothing more and let the pass in progress finish, so a row handed to
        the provider is recorded as sent (not left ``sending`` for its lease to run out
        and go again: a duplicate SMS). Cancels the pass after ``timeout`` seconds."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("outbox pass cancelled at shutdown", extra={"event": "stop"})
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():  # our caller is
                    raise
        await self._provider.close()

    async def pending(self) -> int:
        """Rows not yet sent or failed, across every node (read for the metrics)."""
        async with self._db.read() as conn:
            return await sms_store.pending_count(conn)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                sent = await self.run_once()
            except Exception:
                log.warning("outbox pass failed", exc_info=True)
                sent = 0
            if sent == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                self._wake.clear()

    async def run_once(self) -> int:
        """Claim and send one batch; returns how many rows it handled."""
        now = self._clock.now()
        async with self._db.write() as conn:
            rows = await sms_store.claim(conn, now, now + LEASE, CLAIM_BATCH)
        # One row's failure (a store error while recording it) must not abandon the
        # others mid-flight: each is awaited, failures are logged, their leases run out.
        results = await asyncio.gather(*(self._send(row) for row in rows),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("outbox row not recorded", exc_info=result)
        return len(rows)

    async def _send(self, row) -> None:
        account_id = row["account_id"]
        if row["attempts"] > self._settings.sms_max_attempts:
            # Claimed again after its lease ran out (a node stopped mid-send) with every
            # attempt spent: the limit holds for those attempts too.
            await self._fail(row, row["error_code"] or "lease_expired")
            return
        async with self._db.read() as conn:
            target = await sms_store.recipient(conn, row["patient_id"])
            try:
                to = await self._keyring.open(
                    conn, account_id, target["phone_enc"],
                    patient_field_context(account_id, row["patient_id"], "phone"))
                body = await self._keyring.open(conn, account_id, row["body_enc"],
                                                outbox_context(account_id, row["ref"]))
            except DecryptError:
                await self._fail(row, "integrity")
                return
        if target["opted_out"]:
            await self._fail(row, "opted_out")
            return
        from_ = target["sms_number"] or shared_number(self._settings)
        try:
            sent = await self._provider.send(account_id=account_id, to=to, from_=from_,
                                             body=body)
        except PermanentFailure as exc:
            await self._fail(row, exc.error_code, opted_out=exc.error_code == OPTED_OUT_ERROR)
            return
        except TransientFailure as exc:
            await self._retry(row, exc.error_code)
            return
        except Exception:
            # A provider bug is not a reason to strand the row in ``sending`` until its
            # lease runs out, again and again: retry it within the attempt limit.
            log.warning("sms provider raised", exc_info=True)
            await self._retry(row, "provider_error")
            return
        self._metrics.sms_results.labels("sent").inc()
        status = (MessageStatus.NOTIFIED if row["kind"] == "notification"
                  else _message_status(sent.status))
        if await self._record_sent(row, sent.sid, status, from_):
            self._status(row, status)

    async def _record_sent(self, row, sid: str, status: str, from_: str) -> bool:
        """Record an SMS the provider has taken; True if the message's status moved.

        The provider cannot be asked again without sending again (Twilio has no
        idempotency key), so a store failure here is retried on a fresh connection
        (a dropped connection is discarded by the pool) for a few seconds instead of
        leaving the row ``sending`` until its lease runs out and it is sent twice."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                async with self._db.write() as conn:
                    await sms_store.finish(conn, row["id"], status="sent",
                                           now=self._clock.now(), provider_sid=sid,
                                           from_number=from_)
                    return row["message_id"] is not None and \
                        await sms_store.advance_message_status(conn, row["message_id"],
                                                               status)
            except (DBAPIError, OSError, TimeoutError) as exc:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
                log.warning("sent sms not recorded yet; retrying",
                            extra={"reason": type(exc).__name__})
                await asyncio.sleep(RECORD_RETRY_SECONDS * 2 ** attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _retry(self, row, error_code: str) -> None:
        if row["attempts"] >= self._settings.sms_max_attempts:
            await self._fail(row, error_code)
            return
        self._metrics.sms_results.labels("retry").inc()
        delay = random.uniform(0, min(BACKOFF_CAP_SECONDS,  # noqa: S311 - jitter
                                      self._settings.sms_retry_base_seconds
                                      * 2 ** (row["attempts"] - 1)))
        async with self._db.write() as conn:
            await sms_store.retry_later(conn, row["id"],
                                        self._clock.now() + timedelta(seconds=delay), error_code)

    async def _fail(self, row, error_code: str, opted_out: bool = False) -> None:
        """Give up on an SMS. Its message becomes ``failed``; for a notification, the
        secure message it announced becomes ``not_notified`` (the patient was never
        told of it). ``opted_out``: the provider says the number opted out."""
        self._metrics.sms_results.labels("failed").inc()
        if row["kind"] == "notification":
            status = MessageStatus.NOT_NOTIFIED
            error_code = ErrorCode.OPTED_OUT.value if opted_out else error_code
        else:
            status = MessageStatus.FAILED
        async with self._db.write() as conn:
            await sms_store.finish(conn, row["id"], status="failed", now=self._clock.now(),
                                   error_code=error_code)
            change = await set_opt_out(conn, self._clock, account_id=row["account_id"],
                                       patient_id=row["patient_id"], opted_out=True,
                                       cause="provider") if opted_out else None
            changed = row["message_id"] is not None and \
                await sms_store.advance_message_status(conn, row["message_id"], status)
        if change is not None:
            self._publish(opt_out_event(self._node, change))
        if changed:
            self._status(row, status, error_code)

    def _status(self, row, status: MessageStatus, error_code: str | None = None) -> None:
        self._publish(events.StatusEvent(self._node, row["account_id"], row["conversation_id"],
                                         row["message_id"], status,
                                         rfc3339(self._clock.now()), error_code))


def _message_status(provider_status: str) -> MessageStatus:
    """Twilio's first answer is ``queued``/``accepted``: for the thread it is ``sent``
    (handed over); later states arrive by status callback."""
    if provider_status == MessageStatus.DELIVERED:
        return MessageStatus.DELIVERED
    return MessageStatus.SENT
