"""What the real-time layer asks of the store, as a Protocol.

``realtime`` and ``services`` share a floor and never import each other
(tests/test_import_direction.py): the hub and the node are typed against
``StreamReads``, ``services.streams.Streams`` satisfies it structurally, and the
composition root hands one in. Tests drive the hub with a small in-memory double.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from server.events import MessageEvent
from server.protocol import Message, PatientSummary


class StreamReads(Protocol):
    async def summary(self, account_id: str, conversation_id: str) -> PatientSummary | None:
        """The conversation's patient, or None when it is not in this account."""

    async def opt_out_changed(self, account_id: str, conversation_id: str,
                              opted_out: bool, opted_out_at: str) -> PatientSummary | None:
        """The conversation's patient with its new opt-out state."""

    def forget_summaries(self) -> None:
        """Drop cached summaries (publications may have been lost)."""

    async def replay(self, account_id: str, conversation_id: str, after_seq: int,
                     limit: int, upto_seq: int | None = None) -> list[Message]:
        """Stored messages after ``after_seq`` (up to ``upto_seq``), oldest first."""

    async def from_event(self, event: MessageEvent) -> Message | None:
        """The message of a publication, decrypted; None if the conversation is unknown."""

    async def positions(self, conversation_ids: Sequence[str]) -> dict[str, int]:
        """Each known conversation's last ``seq``."""

    async def read_positions(self, reader_id: str) -> dict[str, int]:
        """A staff member's inbound messages seen, per conversation."""

    async def message_channel(self, message_id: str) -> str | None: ...

    async def mark_delivered(self, message_ids: Sequence[str]) -> Sequence[Sequence[str]]:
        """Mark secure messages ``delivered``; (message, conversation, account) of each
        that changed."""

    async def session_states(self, session_ids: Sequence[str]
                             ) -> Mapping[str, Mapping[str, Any]]:
        """The session rows by id (``auth.session_over`` reads them)."""

    async def touch_sessions(self, session_ids: Sequence[str]) -> None:
        """Record user activity on these sessions now."""

    async def flush(self) -> None:
        """Write what is still waiting (the node is stopping)."""
