"""The schema, as SQLAlchemy Core tables (the migrations in ``migrations/`` create it).

PHI columns end in ``_enc`` and hold envelopes from :mod:`server.crypto`; nothing here
holds a body, patient name, phone or date of birth in plain text. Ids are UUID strings
made by the application, so a ciphertext can be bound to its row before the insert.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use the injected clock, which gives UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _id(name: str = "id", *args, **kw) -> Column:
    return Column(name, String(36), *args, **kw)


accounts = Table(
    "accounts", metadata,
    _id(primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("clinic_name", String(200), nullable=False),
    Column("portal_active", Boolean, nullable=False, default=False),
    Column("sms_number", String(20), unique=True),
    Column("secure_link_ttl_hours", Integer, nullable=False, default=72),
    # Always ask for a one-time SMS code after the date of birth (else only for links
    # sent more than 24 hours ago).
    Column("require_code", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

staff = Table(
    "staff", metadata,
    _id(primary_key=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("role", String(10), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
)

patients = Table(
    "patients", metadata,
    _id(primary_key=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("name_enc", LargeBinary, nullable=False),
    Column("phone_enc", LargeBinary, nullable=False),
    Column("phone_index", String(64), nullable=False),
    Column("dob_enc", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Replied STOP (or the provider said the number is opted out): no SMS of any kind.
    Column("opted_out", Boolean, nullable=False, default=False),
    # When it replied STOP (or the provider reported the opt-out); null while opted in.
    Column("opted_out_at", UTCDateTime),
    # Made for an inbound SMS from a number no patient has; staff complete it later.
    Column("unknown", Boolean, nullable=False, default=False),
    UniqueConstraint("account_id", "phone_index"),
)

conversations = Table(
    "conversations", metadata,
    _id(primary_key=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    _id("patient_id", ForeignKey("patients.id"), nullable=False, unique=True),
    # The stream position: the seq of the newest message, raised inside each insert's
    # transaction under the row lock, so seqs are 1, 2, 3... with no gaps.
    Column("last_seq", BigInteger, nullable=False, default=0),
    # Inbound messages so far; a staff member's unread count is this minus the
    # ``inbound_seen`` of their read pointer, so no count query runs per message.
    Column("inbound_count", BigInteger, nullable=False, default=0),
    # The last secure-message notification: at most one per window while unread.
    Column("notified_at", UTCDateTime),
    Column("notified_seq", BigInteger, nullable=False, default=0),
    # Wrong dates of birth and codes on any of its links, counted together (so a new
    # link brings no new tries); the fifth locks them all. Only staff's "Send a new
    # link" sets it back to 0.
    Column("link_failures", Integer, nullable=False, default=0),
    Column("last_activity_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "account_id", "last_activity_at"),
)

messages = Table(
    "messages", metadata,
    _id(primary_key=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    _id("conversation_id", ForeignKey("conversations.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("client_msg_id", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("sender_kind", String(8), nullable=False),
    _id("sender_id", nullable=False),
    Column("body_enc", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("conversation_id", "seq"),
    UniqueConstraint("conversation_id", "client_msg_id"),
)

read_pointers = Table(
    "read_pointers", metadata,
    _id("conversation_id", ForeignKey("conversations.id"), primary_key=True),
    _id("reader_id", primary_key=True),
    Column("reader_kind", String(8), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("inbound_seen", BigInteger, nullable=False, default=0),
)

sessions = Table(
    "sessions", metadata,
    # SHA-256 of the cookie value: a leaked table holds no usable session.
    Column("id", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    _id("staff_id", ForeignKey("staff.id"), index=True),
    _id("patient_id", ForeignKey("patients.id")),
    _id("conversation_id", ForeignKey("conversations.id")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
)

login_throttle = Table(
    "login_throttle", metadata,
    # Blind index of the lower-cased email: unknown emails are throttled the same way.
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

data_keys = Table(
    "data_keys", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    # One hash chain per account ("system" for events outside any account).
    Column("stream", String(36), nullable=False),
    Column("seq", BigInteger, nullable=False),
    # Exactly the hashed text, so verification never depends on a driver's time parsing.
    Column("ts", String(32), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(64)),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32)),
    Column("object_id", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("ip", String(64)),
    Column("request_id", String(64)),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    UniqueConstraint("stream", "seq"),
    Index(None, "stream", "ts"),
)

audit_heads = Table(
    "audit_heads", metadata,
    Column("stream", String(36), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# --- the SMS bridge (migration 0002) ------------------------------------------------------

sms_outbox = Table(
    "sms_outbox", metadata,
    # The id orders a conversation's SMS: they go out in this order, one at a time.
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("ref", String(36), nullable=False, unique=True),  # binds body_enc to the row
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    _id("conversation_id", ForeignKey("conversations.id"), nullable=False),
    _id("patient_id", ForeignKey("patients.id"), nullable=False),
    _id("message_id", ForeignKey("messages.id")),  # the thread message (or notified one)
    Column("kind", String(16), nullable=False),  # message | notification | help
    Column("body_enc", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime),
    Column("provider_sid", String(64), unique=True),
    Column("error_code", String(16)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    # The number a sent SMS left from: the account's own, or the shared one (null: sent
    # before 0004 recorded it, from the shared number). Replies to the shared number go
    # to the conversation it texted last (server/services/inbound_sms.py).
    Column("from_number", String(20)),
    Index(None, "status", "next_attempt_at"),
    Index(None, "conversation_id", "status"),
)

secure_links = Table(
    "secure_links", metadata,
    # SHA-256 of the 256-bit token; the token itself exists only in the SMS.
    Column("token_hash", String(64), primary_key=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    _id("conversation_id", ForeignKey("conversations.id"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    # Wrong dates of birth and wrong codes together; five lock the link for good.
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_at", UTCDateTime),
    # When a patient first verified on it; a newer link revokes only unverified ones.
    Column("verified_at", UTCDateTime),
    # When the patient pressed "End session" after it was issued: from then on it opens
    # only with the one-time code too (docs/security.md).
    Column("session_ended_at", UTCDateTime),
    # The staff member whose "Send a new link" made it (null: a notification's link);
    # the per-conversation resend limit counts these.
    _id("resent_by"),
)

simulated_sms = Table(
    "simulated_sms", metadata,
    # What the built-in simulator "sent": the demo's phone page reads it back.
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("sid", String(34), nullable=False, unique=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("to_index", String(64), nullable=False, index=True),
    Column("to_enc", LargeBinary, nullable=False),
    Column("from_number", String(20), nullable=False),
    Column("body_enc", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- the patient's secure session (migration 0003) ----------------------------------------

link_codes = Table(
    "link_codes", metadata,
    # One-time codes sent by SMS for a link; only a keyed hash of the code is kept.
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), ForeignKey("secure_links.token_hash"), nullable=False,
           index=True),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)
