"""One socket's state: who it is, what it follows, its limits and its outbox.

No I/O here: the endpoint reads frames and the writer task drains the outbox; the hub
pushes encoded frames in. Per-subscription positions make delivery exactly-once and in
order at the socket: a frame is written only when its ``seq`` is the next one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from server.protocol import BEFORE_DELIVERED, CloseCode, Message
from server.realtime.limits import Throttle, TokenBucket
from server.realtime.outbox import Outbox

# Live frames held for a subscription while its replay runs; a replay that cannot keep
# up with this many new messages is a socket that cannot keep up at all (4408).
MAX_PENDING = 5_000
# One typing relay per conversation per socket at most this often (seconds).
TYPING_INTERVAL = 2.0

_ids = itertools.count(1)


@dataclass(slots=True)
class Subscription:
    """Where a socket is in one conversation's stream."""

    last_seq: int
    replaying: bool = True
    # (seq, frame, message id to mark delivered) that arrived during the replay.
    pending: list[tuple[int, str, str | None]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Connection:
    role: Literal["staff", "patient"]
    account_id: str
    user_id: str  # the staff member or the patient
    user_name: str
    session_id: str
    outbox: Outbox
    bucket: TokenBucket
    conversation_id: str | None = None  # a patient's one conversation
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # Staff: inbound messages seen per conversation (their unread = count - seen). Shared
    # by all of the member's sockets on this node (realtime/staff_views.py); set at attach.
    read_seen: dict[str, int] | None = None
    # Staff: the newest (last_seq, inbound_count, last_activity_at) sent in an inbox
    # update per conversation, so a later update never describes an older state. Shared
    # by the account's staff sockets on this node; set at attach.
    inbox: dict[str, tuple[int, int, str]] | None = None
    typing_throttle: Throttle | None = None  # made at the first typing frame
    last_activity: datetime | None = None  # last user action not yet written to the store
    close_code: CloseCode | None = None
    close_reason: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def typing(self) -> Throttle:
        if self.typing_throttle is None:
            self.typing_throttle = Throttle(TYPING_INTERVAL)
        return self.typing_throttle

    @property
    def is_patient(self) -> bool:
        return self.role == "patient"

    def may_see(self, channel: str) -> bool:
        """The secure page shows Secure Chat only; SMS stays on the patient's phone."""
        return not self.is_patient or channel == "secure"

    def delivered_id(self, message: Message) -> str | None:
        """A secure message to the patient, sent to the patient's own socket: once
        written, it is ``delivered`` (returns its id to mark)."""
        if (self.is_patient and message.direction == "outbound"
                and message.channel == "secure" and message.status in BEFORE_DELIVERED):
            return message.id
        return None

    def deliver(self, conversation_id: str, seq: int, frame: str, channel: str,
                delivered_id: str | None = None) -> bool:
        """Offer message ``seq`` of a followed conversation. Returns True if it was
        queued; duplicates and (for patients) SMS only move the position."""
        sub = self.subscriptions.get(conversation_id)
        if sub is None:
            return False
        if sub.replaying:
            if len(sub.pending) >= MAX_PENDING:
                self.close(CloseCode.TOO_SLOW, "too slow: replay could not keep up")
            else:
                sub.pending.append((seq, frame if self.may_see(channel) else "",
                                    delivered_id))
            return False
        if seq <= sub.last_seq:
            return False
        sub.last_seq = seq
        if not self.may_see(channel):
            return False
        return self.push(frame, delivered_id)

    def push(self, frame: str, delivered_id: str | None = None) -> bool:
        if not self.outbox.push(frame, delivered_id):
            if self.outbox.overflowed:
                self.close(CloseCode.TOO_SLOW, "too slow: outbound queue overflowed; resume by seq")
            return False
        return True

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to close the socket with ``code`` after what is queued (or at
        once, for an overflow)."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.outbox.close()
