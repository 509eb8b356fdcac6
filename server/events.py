"""What nodes publish to each other: msgpack structs, one per event kind.

A message event carries its body as the stored envelope (AES-256-GCM ciphertext bound
to its row), never as plain text: Redis sees no PHI (product rule 2). Staff names are
workforce identifiers, not PHI, and travel as they are; a patient's name never travels
(nodes read it from the store, encrypted, and cache it). ``node`` lets a node ignore its
own events coming back from the broker (it delivered them locally already).
"""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, frozen=True, array_like=True, tag=True):
    node: str
    account_id: str
    conversation_id: str


class MessageEvent(Event, tag="m"):
    id: str
    seq: int
    client_msg_id: str
    direction: str
    channel: str
    sender_kind: str
    sender_id: str
    sender_name: str  # staff name; empty for a patient (resolved from the store)
    body_enc: bytes
    created_at: str
    status: str
    inbound_count: int  # the conversation's inbound messages so far (for unread counts)


class StatusEvent(Event, tag="s"):
    message_id: str
    status: str
    at: str
    error_code: str | None = None
    # The message's channel when the publisher knows it; otherwise a node with a patient
    # socket on the conversation reads it (SMS statuses never reach the secure page).
    channel: str | None = None


class TypingEvent(Event, tag="t"):
    sender_kind: str
    sender_id: str
    sender_name: str


class ReadEvent(Event, tag="r"):
    seq: int
    reader_kind: str
    reader_id: str
    reader_name: str
    inbound_seen: int  # the reader's new read position in inbound messages (staff)
    # The conversation when it was read, for the reader's other staff sockets' inbox
    # (``last_activity_at`` empty: not known, no inbox update).
    last_seq: int = 0
    inbound_count: int = 0
    last_activity_at: str = ""


class PresenceEvent(Event, tag="p"):
    online: bool


class PresenceQuery(msgspec.Struct, frozen=True, array_like=True, tag="q"):
    """A node began following an account: the others answer with the account's
    patients online on them (they announced it before this node was listening)."""

    node: str
    account_id: str


class NoticeEvent(Event, tag="n"):
    """Something staff should know about a conversation that is not a message
    (``link_locked``: a secure link was locked after too many wrong tries)."""

    notice: str
    at: str


class OptOutEvent(Event, tag="o"):
    """The patient replied STOP (or START, or the provider reported the opt-out): staff
    consoles show it at once. The conversation's position rides along so an inbox
    update can be sent without reading the store; ``opted_out_at`` is empty when
    opted in."""

    opted_out: bool
    opted_out_at: str
    last_seq: int
    inbound_count: int
    last_activity_at: str


class AccountChanged(msgspec.Struct, frozen=True, array_like=True, tag="a"):
    """An account's settings changed: its staff sockets get the new state. The clinic's
    name and the portal switch are no PHI."""

    node: str
    account_id: str
    portal_active: bool
    clinic_name: str


class SessionEnded(msgspec.Struct, frozen=True, array_like=True, tag="x"):
    """On the control channel: close every socket of this session, on every node."""

    node: str
    session_id: str


AnyEvent = (MessageEvent | StatusEvent | TypingEvent | ReadEvent | PresenceEvent
            | PresenceQuery | NoticeEvent | OptOutEvent | AccountChanged | SessionEnded)
encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(AnyEvent).decode
