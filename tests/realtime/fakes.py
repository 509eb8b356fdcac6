"""Small recording doubles for driving the hub and node without a database or a socket."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import msgspec

from server.clock import FakeClock, rfc3339
from server.events import MessageEvent
from server.protocol import Message, PatientSummary, Sender
from server.realtime.connection import Connection
from server.realtime.limits import TokenBucket
from server.realtime.outbox import Outbox


class Gate:
    """Holds a coroutine at one point until the test lets it go."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._open.wait()

    def open(self) -> None:
        self._open.set()


class MemoryStreams:
    """``realtime.reads.StreamReads`` over messages held in memory (the store of the
    test), recording what the hub and node ask of it."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.messages: dict[str, list[Message]] = defaultdict(list)
        self.account_of: dict[str, str] = {}
        self.replays: list[tuple[str, int, int | None]] = []  # (conversation, after, upto)
        self.touched: list[str] = []
        self.ended: set[str] = set()
        # Set by ``hold_replay``: the next replay stops before and after its read.
        self._before_read: Gate | None = None
        self._after_read: Gate | None = None

    def commit(self, account_id: str, conversation_id: str, *, channel: str = "secure",
               direction: str = "outbound") -> MessageEvent:
        """Store the conversation's next message; returns its publication."""
        self.account_of[conversation_id] = account_id
        stored = self.messages[conversation_id]
        seq = len(stored) + 1
        at = rfc3339(self._clock.now())
        sender = Sender("staff", "staff-1", "Dr Test") if direction == "outbound" \
            else Sender("patient", "patient-1", "")
        message = Message(conversation_id=conversation_id, id=f"{conversation_id}-m{seq}",
                          seq=seq, client_msg_id=f"client-{seq}", direction=direction,
                          channel=channel, sender=sender, body=f"body {seq}", created_at=at,
                          status="sent")
        stored.append(message)
        inbound = sum(1 for m in stored if m.direction == "inbound")
        return MessageEvent("writer", account_id, conversation_id, message.id, seq,
                            message.client_msg_id, direction, channel, sender.kind, sender.id,
                            sender.name, b"", at, "sent", inbound)

    def hold_replay(self) -> tuple[Gate, Gate]:
        """Gates the next replay passes before and after reading the messages."""
        self._before_read, self._after_read = Gate(), Gate()
        return self._before_read, self._after_read

    # --- StreamReads -----------------------------------------------------------------------

    async def summary(self, account_id: str, conversation_id: str) -> PatientSummary | None:
        if self.account_of.get(conversation_id) != account_id:
            return None
        return PatientSummary(id=f"patient-of-{conversation_id}", display_name="Pat",
                              masked_phone="***-0100")

    async def opt_out_changed(self, account_id: str, conversation_id: str,
                              opted_out: bool, opted_out_at: str) -> PatientSummary | None:
        summary = await self.summary(account_id, conversation_id)
        return None if summary is None else msgspec.structs.replace(
            summary, opted_out=opted_out, opted_out_at=opted_out_at or None)

    def forget_summaries(self) -> None:
        pass  # nothing cached

    async def replay(self, account_id: str, conversation_id: str, after_seq: int,
                     limit: int, upto_seq: int | None = None) -> list[Message]:
        self.replays.append((conversation_id, after_seq, upto_seq))
        before, after = self._before_read, self._after_read
        self._before_read = self._after_read = None
        if before is not None:
            await before.pass_through()
        if self.account_of.get(conversation_id) != account_id:
            return []
        page = [m for m in self.messages[conversation_id]
                if m.seq > after_seq and (upto_seq is None or m.seq <= upto_seq)][:limit]
        if after is not None:
            await after.pass_through()
        return page

    async def from_event(self, event: MessageEvent) -> Message | None:
        if self.account_of.get(event.conversation_id) != event.account_id:
            return None
        return self.messages[event.conversation_id][event.seq - 1]

    async def positions(self, conversation_ids: Sequence[str]) -> dict[str, int]:
        return {c: len(self.messages[c]) for c in conversation_ids if c in self.account_of}

    async def read_positions(self, reader_id: str) -> dict[str, int]:
        return {}

    async def message_channel(self, message_id: str) -> str | None:
        for stored in self.messages.values():
            for message in stored:
                if message.id == message_id:
                    return message.channel
        return None

    async def mark_delivered(self, message_ids: Sequence[str]) -> Sequence[Sequence[str]]:
        return []

    async def session_states(self, session_ids: Sequence[str]
                             ) -> Mapping[str, Mapping[str, Any]]:
        now = self._clock.now()
        return {s: {"active": True, "ended_at": now if s in self.ended else None,
                    "expires_at": now + timedelta(hours=8), "last_seen_at": now}
                for s in session_ids}

    async def touch_sessions(self, session_ids: Sequence[str]) -> None:
        self.touched += session_ids

    async def flush(self) -> None:
        pass


def connection(role: str, account_id: str, *, user_id: str, session_id: str,
               max_frames: int = 1000, conversation_id: str | None = None) -> Connection:
    """A real Connection whose outbox is the only sink: nothing is written anywhere."""
    return Connection(role, account_id, user_id, "Dr Test" if role == "staff" else "",
                      session_id, Outbox(max_frames, 1 << 20),
                      TokenBucket(20.0, 40, time.monotonic()), conversation_id=conversation_id)
