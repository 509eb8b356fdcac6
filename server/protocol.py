"""The wire schema: every JSON body and frame as a msgspec struct (pure).

Names follow ``docs/protocol.md`` (the public contract). Inbound structs
forbid unknown fields, so a typo is an error instead of a silent default; new outbound
fields always get defaults, so old clients keep working. Decoders are built once here.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

# Bodies are bounded so one message cannot exhaust memory or a screen (10,000 chars;
# an SMS is 1,600 at most, a clinical note rarely more than a few thousand).
MAX_BODY_CHARS = 10_000
# PostgreSQL text cannot hold NUL: a string that is stored or looked up in plain text
# refuses it here, as a bad field, instead of failing in the driver as a 500.
NO_NUL = r"^[^\x00]*$"
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Body = Annotated[str, Meta(min_length=1, max_length=MAX_BODY_CHARS)]
Id = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL)]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]



class CloseCode(enum.IntEnum):
    """The WebSocket close codes the server sends (``docs/protocol.md`` "Close codes"),
    each with ``reconnect``: whether a client should reconnect on its own after it.

    4401 is not a reconnect: the client signs in (or verifies) again first. 4403 is
    reserved; a bad Origin is refused before the upgrade with HTTP 403. 1009 and 1003
    are the standard codes (RFC 6455 section 7.4.1) for a frame the server will not
    take: reconnecting would only send it again.
    """

    reconnect: bool

    def __new__(cls, code: int, reconnect: bool) -> CloseCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.reconnect = reconnect
        return member

    UNAUTHENTICATED = 4401, False  # no session, or it ended or expired
    FORBIDDEN = 4403, False
    TOO_SLOW = 4408, True  # the outbound queue overflowed: reconnect, resume by seq
    RESTARTING = 1012, True  # the node is shutting down: reconnect to any node
    TOO_LARGE = 1009, False
    UNSUPPORTED = 1003, False  # a binary frame


class MessageStatus(enum.StrEnum):
    """A message's delivery state (``docs/protocol.md`` "Message statuses"), each with
    ``rank``: a status only ever moves to a higher rank, since provider callbacks and
    receipts arrive out of order (a late ``sent`` never undoes ``read``).

    SMS: queued → sent → delivered | undelivered | failed. Secure: sent → notified |
    not_notified → delivered → read. One order serves both channels.
    """

    rank: int

    def __new__(cls, value: str, rank: int) -> MessageStatus:
        member = str.__new__(cls, value)
        member._value_ = value
        member.rank = rank
        return member

    QUEUED = "queued", 0
    SENT = "sent", 1
    NOTIFIED = "notified", 2
    NOT_NOTIFIED = "not_notified", 2  # no SMS could tell the patient (error_code: why)
    DELIVERED = "delivered", 3
    UNDELIVERED = "undelivered", 3
    FAILED = "failed", 3
    READ = "read", 4

    def advances(self, current: str | None) -> bool:
        """Whether moving from ``current`` to this status goes forward."""
        return current is None or self.rank > MessageStatus(current).rank


# The secure statuses ``delivered`` follows once the patient's socket has the message:
# told by SMS or not, the patient may open the page anyway (docs/protocol.md).
BEFORE_DELIVERED = frozenset({MessageStatus.SENT, MessageStatus.NOTIFIED,
                              MessageStatus.NOT_NOTIFIED})


Direction = Literal["outbound", "inbound"]
Channel = Literal["sms", "secure"]


class Inbound(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of everything a client sends: unknown fields are refused."""


# --- HTTP request bodies ----------------------------------------------------------------

class LoginRequest(Inbound):
    email: Annotated[str, Meta(min_length=3, max_length=320, pattern=NO_NUL)]
    # Capped before any hashing (passwords.MAX_PASSWORD_BYTES is the byte limit).
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class CreatePatientRequest(Inbound):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    phone: Annotated[str, Meta(min_length=3, max_length=32)]
    date_of_birth: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class SendRequest(Inbound):
    client_msg_id: ClientMsgId
    body: Body
    secure: bool = False


class SettingsUpdate(Inbound):
    portal_active: bool | UnsetType = UNSET
    clinic_name: Name | UnsetType = UNSET
    sms_number: str | UnsetType | None = UNSET
    secure_link_ttl_hours: Annotated[int, Meta(ge=1, le=720)] | UnsetType = UNSET
    require_code: bool | UnsetType = UNSET


class CreateStaffRequest(Inbound):
    name: Name
    email: Annotated[str, Meta(min_length=3, max_length=320,
                               pattern=r"^[^@\s\x00]+@[^@\s\x00]+$")]
    role: Literal["admin", "staff"]
    # The policy (passwords.check_policy) is checked by the service; this only caps it.
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


# --- what the server sends --------------------------------------------------------------

class Sender(msgspec.Struct, frozen=True):
    kind: Literal["staff", "patient", "system"]
    id: str
    name: str


class Message(msgspec.Struct, frozen=True, tag="message", tag_field="type", kw_only=True):
    """One message of a thread: the ``message`` frame, and each item of a history page."""

    conversation_id: str
    id: str
    seq: int
    client_msg_id: str
    direction: Direction
    channel: Channel
    sender: Sender
    body: str
    created_at: str
    status: str


class Ack(msgspec.Struct, frozen=True, tag="ack", tag_field="type", kw_only=True):
    """The message is durably stored (the answer to ``send``)."""

    client_msg_id: str
    message_id: str
    seq: int
    ref: str | None = None


class HistoryPage(msgspec.Struct, frozen=True):
    messages: list[Message]
    has_more: bool


class PatientSummary(msgspec.Struct, frozen=True):
    id: str
    display_name: str
    masked_phone: str
    opted_out: bool = False  # replied STOP: no SMS can be sent
    unknown: bool = False  # made for an SMS from a number no patient had
    # When the patient replied STOP (RFC 3339); None while opted in, or when the opt-out
    # predates the date being recorded.
    opted_out_at: str | None = None


class ConversationSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    patient: PatientSummary
    last_activity_at: str
    last_seq: int
    unread: int
    patient_online: bool = False  # the patient's secure page is open (on any node)


class VerifyRequest(Inbound):
    date_of_birth: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    code: Annotated[str, Meta(pattern=r"^\d{6}$")] | None = None


class SegmentsRequest(Inbound):
    body: Annotated[str, Meta(max_length=MAX_BODY_CHARS)]


class AccountSettings(msgspec.Struct, frozen=True, kw_only=True):
    portal_active: bool
    clinic_name: str
    sms_number: str | None
    secure_link_ttl_hours: int
    require_code: bool = False  # always ask the patient for a texted one-time code


class StaffMember(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    email: str
    role: str
    active: bool
    created_at: str


# --- WebSocket: client → server -----------------------------------------------------------
# Every frame may carry ``ref``; the direct answer (ack, subscribed, pong, error) echoes it.

Ref = Annotated[str, Meta(max_length=64)]
SeqNumber = Annotated[int, Meta(ge=0)]


class ClientFrame(Inbound, tag_field="type", kw_only=True):
    ref: Ref | None = None


class Subscribe(ClientFrame, tag="subscribe"):
    conversation_id: Id
    after_seq: SeqNumber = 0


class Unsubscribe(ClientFrame, tag="unsubscribe"):
    conversation_id: Id


class Send(ClientFrame, tag="send"):
    conversation_id: Id
    client_msg_id: ClientMsgId
    body: Body
    secure: bool = False


class Typing(ClientFrame, tag="typing"):
    conversation_id: Id


class Read(ClientFrame, tag="read"):
    conversation_id: Id
    seq: Annotated[int, Meta(ge=1)]


class Ping(ClientFrame, tag="ping"):
    pass


AnyClientFrame = Subscribe | Unsubscribe | Send | Typing | Read | Ping
client_frame_decoder = msgspec.json.Decoder(AnyClientFrame)


# --- WebSocket: server → client -----------------------------------------------------------

class ServerFrame(msgspec.Struct, frozen=True, tag_field="type", kw_only=True,
                  omit_defaults=True):
    pass


class User(msgspec.Struct, frozen=True):
    id: str
    name: str


class AccountInfo(msgspec.Struct, frozen=True):
    """What a staff console shows of its account's settings (no PHI)."""

    portal_active: bool
    clinic_name: str


class Ready(ServerFrame, tag="ready"):
    role: Literal["staff", "patient"]
    user: User
    conversation_id: str | None = None
    account: AccountInfo | None = None  # staff: the account as it is now (resync)


class Subscribed(ServerFrame, tag="subscribed"):
    conversation_id: str
    last_seq: int
    ref: str | None = None


class Status(ServerFrame, tag="status"):
    conversation_id: str
    message_id: str
    status: str
    at: str
    error_code: str | None = None


class ConversationUpdate(ServerFrame, tag="conversation"):
    id: str
    patient: PatientSummary
    last_activity_at: str
    last_seq: int
    unread: int
    # No default: with omit_defaults a default False would vanish from the frame, and a
    # console merging frames into its inbox would keep a stale ``true``.
    patient_online: bool


class AccountState(ServerFrame, tag="account"):
    """Staff only: the account's settings changed (on any node)."""

    portal_active: bool
    clinic_name: str


class TypingNotice(ServerFrame, tag="typing"):
    conversation_id: str
    sender: Sender


class ReadNotice(ServerFrame, tag="read"):
    conversation_id: str
    seq: int
    reader: Sender


class Presence(ServerFrame, tag="presence"):
    """Whether the conversation's patient has a live secure page (staff only)."""

    conversation_id: str
    patient_online: bool


class Notice(ServerFrame, tag="notice"):
    """Staff only: an event in a conversation that is not a message (``link_locked``)."""

    conversation_id: str
    notice: str
    at: str


class ErrorFrame(ServerFrame, tag="error"):
    code: str
    message: str
    client_msg_id: str | None = None
    retry_after_ms: int | None = None
    ref: str | None = None


class Pong(ServerFrame, tag="pong"):
    ref: str | None = None


frame_encoder = msgspec.json.Encoder()


def encode(frame: msgspec.Struct) -> str:
    """A server frame as the text a socket is sent; a fan-out encodes once and hands the
    same string to every socket."""
    return frame_encoder.encode(frame).decode()
