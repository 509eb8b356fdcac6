"""The simulated handsets behind the demo's ``/dev/phone`` page: for each phone number,
its conversations as a phone's messages app holds them, both directions.

What a handset received is the simulator's store (:meth:`SimulatorProvider.inbox`); what
it sent is the patient's inbound SMS stored in the conversation of each account that
texted it (:meth:`Messaging.patient_sms`), as the page's reply form posts them through
the real inbound path. A thread is one correspondent number, as on a phone; a reply goes
into the thread of the number that account last texted the handset from (the one its
reply form answers). :func:`arrange` is pure; :func:`read` fetches and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from server.services.messaging import Messaging
from server.services.patients import Patients
from server.sms.simulator import SimulatorProvider

# The simulator's inbox is read newest first up to this many SMS, and as many of each
# patient's own replies: a demo page, a few screens of history is all it needs.
HISTORY = 200


@dataclass(frozen=True)
class Bubble:
    at: datetime
    body: str
    sent: bool  # True: this handset sent it (the patient's reply); False: it received it


@dataclass
class Thread:
    other: str  # the correspondent's number (the clinic's, or the shared sending number)
    bubbles: list[Bubble] = field(default_factory=list)

    @property
    def last_at(self) -> datetime:
        return self.bubbles[-1].at


@dataclass
class Handset:
    number: str
    threads: list[Thread] = field(default_factory=list)


@dataclass(frozen=True)
class Reply:
    """An SMS a handset sent into one account's conversation."""

    phone: str
    account_id: str
    at: datetime
    body: str


def arrange(received: Iterable[Mapping], replies: Iterable[Reply]) -> list[Handset]:
    """Handsets with their threads, each thread oldest first; the handset and thread
    with the latest activity come first. ``received`` are simulator inbox rows (``to``,
    ``from``, ``account_id``, ``body``, ``at``)."""
    threads: dict[tuple[str, str], Thread] = {}
    # (phone, account) -> (when, number): the number that account last texted it from.
    last_from: dict[tuple[str, str], tuple[datetime, str]] = {}
    for sms in received:
        key = (sms["to"], sms["from"])
        threads.setdefault(key, Thread(sms["from"])).bubbles.append(
            Bubble(sms["at"], sms["body"], sent=False))
        seen = last_from.get((sms["to"], sms["account_id"]))
        if seen is None or sms["at"] >= seen[0]:
            last_from[(sms["to"], sms["account_id"])] = (sms["at"], sms["from"])
    for reply in replies:
        seen = last_from.get((reply.phone, reply.account_id))
        if seen is not None:  # a phone the account never texted has no form to reply from
            threads[(reply.phone, seen[1])].bubbles.append(
                Bubble(reply.at, reply.body, sent=True))
    handsets: dict[str, Handset] = {}
    for (phone, _), thread in threads.items():
        # Same instant: what was received comes first (a reply answers it).
        thread.bubbles.sort(key=lambda bubble: (bubble.at, bubble.sent))
        handsets.setdefault(phone, Handset(phone)).threads.append(thread)
    for handset in handsets.values():
        handset.threads.sort(key=lambda thread: thread.last_at, reverse=True)
    return sorted(handsets.values(), key=lambda h: h.threads[0].last_at, reverse=True)


async def read(provider: SimulatorProvider, messaging: Messaging, patients: Patients
               ) -> list[Handset]:
    """Every simulated handset, both directions, decrypted (demo only)."""
    received = await provider.inbox(HISTORY)
    replies: list[Reply] = []
    for phone, account_id in {(sms["to"], sms["account_id"]) for sms in received}:
        replies += [Reply(phone, account_id, datetime.fromisoformat(m.created_at), m.body)
                    for m in await messaging.patient_sms(
                        account_id, patients.phone_index(account_id, phone), HISTORY)]
    return arrange(received, replies)

