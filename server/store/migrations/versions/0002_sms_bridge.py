"""The SMS bridge: the outbox, secure links, the simulator's log, opt-out and
notification state.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from server.store.tables import AutoId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild), so SQLite keeps its tables as they are.
    op.add_column("patients", sa.Column("opted_out", sa.Boolean, nullable=False,
                                        server_default=sa.false()))
    op.add_column("patients", sa.Column("unknown", sa.Boolean, nullable=False,
                                        server_default=sa.false()))
    op.add_column("conversations", sa.Column("notified_at", UTCDateTime))
    op.add_column("conversations", sa.Column("notified_seq", sa.BigInteger, nullable=False,
                                             server_default="0"))
    op.create_table(
        "sms_outbox",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("ref", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(36)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body_enc", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("claimed_until", UTCDateTime),
        sa.Column("provider_sid", sa.String(64)),
        sa.Column("error_code", sa.String(16)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_sms_outbox"),
        sa.UniqueConstraint("ref", name="uq_sms_outbox_ref"),
        sa.UniqueConstraint("provider_sid", name="uq_sms_outbox_provider_sid"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_sms_outbox_account_id_accounts"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_sms_outbox_conversation_id_conversations"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"],
                                name="fk_sms_outbox_patient_id_patients"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name="fk_sms_outbox_message_id_messages"),
    )
    op.create_index("ix_sms_outbox_status_next_attempt_at", "sms_outbox",
                    ["status", "next_attempt_at"])
    op.create_index("ix_sms_outbox_conversation_id_status", "sms_outbox",
                    ["conversation_id", "status"])
    op.create_table(
        "secure_links",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.PrimaryKeyConstraint("token_hash", name="pk_secure_links"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_secure_links_account_id_accounts"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_secure_links_conversation_id_conversations"),
    )
    op.create_index("ix_secure_links_conversation_id", "secure_links", ["conversation_id"])
    op.create_table(
        "simulated_sms",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("sid", sa.String(34), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("to_index", sa.String(64), nullable=False),
        sa.Column("to_enc", sa.LargeBinary, nullable=False),
        sa.Column("from_number", sa.String(20), nullable=False),
        sa.Column("body_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_simulated_sms"),
        sa.UniqueConstraint("sid", name="uq_simulated_sms_sid"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_simulated_sms_account_id_accounts"),
    )
    op.create_index("ix_simulated_sms_to_index", "simulated_sms", ["to_index"])


def downgrade() -> None:
    for table in ("simulated_sms", "secure_links", "sms_outbox"):
        op.drop_table(table)
    for table, column in (("conversations", "notified_seq"), ("conversations", "notified_at"),
                          ("patients", "unknown"), ("patients", "opted_out")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
