"""Which clinic an inbound SMS belongs to.

A reply to a clinic's own number belongs to that clinic. A reply to the shared sending
number (``server/sms/numbers.py``) belongs to the clinics that texted that phone from
it, and to no other: its thread is the conversation whose most recent SMS from the
shared number is the newest (that is the text the patient is most likely answering),
and an opt-out keyword there applies to every one of those conversations, because the
patient cannot tell the clinics on one number apart and said STOP to the number. A
reply from a phone no clinic texted from the shared number is dropped, never given to
an arbitrary clinic.

Patients' phones are stored as a blind index keyed per account, so the phone is
indexed once per account (one HMAC each) to find its patients across accounts.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from server.store import accounts as account_store
from server.store import sms as sms_store
from server.store.db import Database

# Pairs per lookup statement: far below SQLite's 32,766 bound variables and
# PostgreSQL's 65,535, in case a deployment holds many accounts.
LOOKUP_CHUNK = 1000


class Thread(msgspec.Struct, frozen=True):
    """A conversation that texted the phone from the shared number."""

    account_id: str
    conversation_id: str
    patient_id: str


class SharedNumberRoute(msgspec.Struct, frozen=True):
    thread: Thread  # where the reply is stored
    # The other conversations that texted this phone from the shared number: a STOP or
    # START applies there too.
    others: tuple[Thread, ...]


class InboundRouter:
    def __init__(self, db: Database, shared_number: str,
                 phone_index: Callable[[str, str], str]) -> None:
        self._db = db
        self.shared_number = shared_number
        self._phone_index = phone_index

    async def own_number_account(self, to: str) -> str | None:
        """The account whose own number is ``to`` (never the shared number's)."""
        if to == self.shared_number:
            return None
        async with self._db.read() as conn:
            account = await sms_store.account_by_number(conn, to)
        return None if account is None else account["id"]

    async def shared_number_route(self, from_: str) -> SharedNumberRoute | None:
        """Where a reply from ``from_`` to the shared number goes; None when no account
        texted that phone from the shared number."""
        async with self._db.read() as conn:
            pairs = [(account_id, self._phone_index(account_id, from_))
                     for account_id in await account_store.account_ids(conn)]
            rows = []
            for start in range(0, len(pairs), LOOKUP_CHUNK):
                rows.extend(await sms_store.shared_number_threads(
                    conn, self.shared_number, pairs[start:start + LOOKUP_CHUNK]))
        if not rows:
            return None
        rows.sort(key=lambda row: (row["last_sent_at"], row["last_id"]), reverse=True)
        threads = [Thread(row["account_id"], row["conversation_id"], row["patient_id"])
                   for row in rows]
        return SharedNumberRoute(threads[0], tuple(threads[1:]))
