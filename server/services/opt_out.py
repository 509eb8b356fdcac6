"""A patient's SMS opt-out: the one place it changes, and what staff are told of it.

STOP and START (inbound keywords) and the provider's "this number is opted out" (Twilio
21610, in a send's answer or a status callback) all change it through :func:`set_opt_out`,
inside the caller's transaction: it records when (the console says "Replied STOP on
<date>") and audits the change. A real change returns an :class:`OptOutChange`; the
caller publishes :func:`opt_out_event` of it after its commit, so every staff console of
the account, on every node, gets a ``conversation`` frame with the new state at once
(persist, then publish).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from server import audit, events
from server.clock import Clock, rfc3339
from server.store import sms as sms_store


class OptOutChange(msgspec.Struct, frozen=True):
    """A patient's opt-out changed: the conversation as it was at that moment."""

    account_id: str
    conversation_id: str
    opted_out: bool
    at: datetime  # when it changed (for an opt-out: the "Replied STOP on" date)
    last_seq: int
    inbound_count: int
    last_activity_at: datetime


async def set_opt_out(conn: AsyncConnection, clock: Clock, *, account_id: str,
                      patient_id: str, opted_out: bool, cause: str) -> OptOutChange | None:
    """Opt the patient of ``account_id`` out of SMS (or back in), in the caller's
    transaction; None when it already was so (nothing changes, nothing is audited).

    ``cause`` is ``keyword`` (the patient texted STOP/START) or ``provider`` (the
    provider refused a send because the number opted out): it goes into the audit
    entry, never anything of the message itself.
    """
    now = clock.now()
    convo = await sms_store.set_opted_out(conn, patient_id, opted_out, now)
    if convo is None:
        return None
    await audit.append(conn, clock, stream=account_id, actor=audit.SYSTEM,
                       action="patient.opted_out" if opted_out else "patient.opted_in",
                       object_type="patient", object_id=patient_id,
                       details={"cause": cause})
    return OptOutChange(account_id, convo["id"], opted_out, now, convo["last_seq"],
                        convo["inbound_count"], convo["last_activity_at"])


def opt_out_event(node: str, change: OptOutChange) -> events.OptOutEvent:
    """The publication of a change (no PHI: ids, a flag and times)."""
    return events.OptOutEvent(
        node, change.account_id, change.conversation_id, change.opted_out,
        rfc3339(change.at) if change.opted_out else "", change.last_seq,
        change.inbound_count, rfc3339(change.last_activity_at))
