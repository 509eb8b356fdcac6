"""The initial schema: accounts, staff, patients, conversations, messages, sessions,
data keys and the hash-chained audit log (append-only by trigger).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from server.store.tables import AutoId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id(name: str = "id", *args, **kw) -> sa.Column:
    return sa.Column(name, sa.String(36), *args, **kw)


def upgrade() -> None:
    op.create_table(
        "accounts",
        _id(nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("clinic_name", sa.String(200), nullable=False),
        sa.Column("portal_active", sa.Boolean, nullable=False),
        sa.Column("sms_number", sa.String(20)),
        sa.Column("secure_link_ttl_hours", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
        sa.UniqueConstraint("sms_number", name="uq_accounts_sms_number"),
    )
    op.create_table(
        "staff",
        _id(nullable=False),
        _id("account_id", nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_staff_account_id_accounts"),
        sa.UniqueConstraint("email", name="uq_staff_email"),
    )
    op.create_index("ix_staff_account_id", "staff", ["account_id"])
    op.create_table(
        "patients",
        _id(nullable=False),
        _id("account_id", nullable=False),
        sa.Column("name_enc", sa.LargeBinary, nullable=False),
        sa.Column("phone_enc", sa.LargeBinary, nullable=False),
        sa.Column("phone_index", sa.String(64), nullable=False),
        sa.Column("dob_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_patients_account_id_accounts"),
        sa.UniqueConstraint("account_id", "phone_index",
                            name="uq_patients_account_id_phone_index"),
    )
    op.create_table(
        "conversations",
        _id(nullable=False),
        _id("account_id", nullable=False),
        _id("patient_id", nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("inbound_count", sa.BigInteger, nullable=False),
        sa.Column("last_activity_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_conversations_account_id_accounts"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name="fk_conversations_patient_id_patients"),
        sa.UniqueConstraint("patient_id", name="uq_conversations_patient_id"),
    )
    op.create_index("ix_conversations_account_id_last_activity_at", "conversations",
                    ["account_id", "last_activity_at"])
    op.create_table(
        "messages",
        _id(nullable=False),
        _id("account_id", nullable=False),
        _id("conversation_id", nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("sender_kind", sa.String(8), nullable=False),
        _id("sender_id", nullable=False),
        sa.Column("body_enc", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_messages_account_id_accounts"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_messages_conversation_id_conversations"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_id_seq"),
        sa.UniqueConstraint("conversation_id", "client_msg_id",
                            name="uq_messages_conversation_id_client_msg_id"),
    )
    op.create_table(
        "read_pointers",
        _id("conversation_id", nullable=False),
        _id("reader_id", nullable=False),
        sa.Column("reader_kind", sa.String(8), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("inbound_seen", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "reader_id", name="pk_read_pointers"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_read_pointers_conversation_id_conversations"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        _id("account_id", nullable=False),
        _id("staff_id"),
        _id("patient_id"),
        _id("conversation_id"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_sessions_account_id_accounts"),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name="fk_sessions_staff_id_staff"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name="fk_sessions_patient_id_patients"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_sessions_conversation_id_conversations"),
    )
    op.create_index("ix_sessions_staff_id", "sessions", ["staff_id"])
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_login_throttle"),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        _id("account_id", nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_data_keys_account_id_accounts"),
    )
    op.create_index("ix_data_keys_account_id", "data_keys", ["account_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("stream", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32)),
        sa.Column("object_id", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("ip", sa.String(64)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sa.UniqueConstraint("stream", "seq", name="uq_audit_log_stream_seq"),
    )
    op.create_index("ix_audit_log_stream_ts", "audit_log", ["stream", "ts"])
    op.create_table(
        "audit_heads",
        sa.Column("stream", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("stream", name="pk_audit_heads"),
    )
    _make_audit_append_only()


def _make_audit_append_only() -> None:
    """Reject UPDATE and DELETE on the audit log, whoever the application connects as."""
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    for table in ("audit_heads", "audit_log", "data_keys", "login_throttle", "sessions",
                  "read_pointers", "messages", "conversations", "patients", "staff",
                  "accounts"):
        op.drop_table(table)
