"""Trust fixes (issue 13): opt-out dates, per-conversation link tries, ended links,
keyed audit entries and bound message envelopes.

Each part of the change owns one section below; keep them apart.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from server.store.tables import AutoId, UTCDateTime  # noqa: F401

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _upgrade_opt_out()
    _upgrade_links()
    _upgrade_sign_in()
    _upgrade_integrity()
    _upgrade_routing()


def downgrade() -> None:
    _downgrade_routing()
    _downgrade_integrity()
    _downgrade_sign_in()
    _downgrade_links()
    _downgrade_opt_out()


# --- opt-out state (STOP visible) ---------------------------------------------------
def _upgrade_opt_out() -> None:
    # When the patient replied STOP (null while opted in, and for opt-outs recorded
    # before this column: their date is unknown, the console then says so).
    op.add_column("patients", sa.Column("opted_out_at", UTCDateTime))


def _downgrade_opt_out() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("opted_out_at")


# --- secure links (resend, per-conversation tries, End session) ---------------------
def _upgrade_links() -> None:
    op.add_column("conversations", sa.Column("link_failures", sa.Integer, nullable=False,
                                             server_default="0"))
    op.add_column("secure_links", sa.Column("verified_at", UTCDateTime))
    op.add_column("secure_links", sa.Column("session_ended_at", UTCDateTime))
    op.add_column("secure_links", sa.Column("resent_by", sa.String(36)))


def _downgrade_links() -> None:
    with op.batch_alter_table("secure_links") as batch:
        batch.drop_column("resent_by")
        batch.drop_column("session_ended_at")
        batch.drop_column("verified_at")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("link_failures")


# --- staff sign-in ------------------------------------------------------------------
def _upgrade_sign_in() -> None:
    pass


def _downgrade_sign_in() -> None:
    pass


# --- integrity: audit MAC, message associated data ------------------------------------
def _upgrade_integrity() -> None:
    pass


def _downgrade_integrity() -> None:
    pass


# --- inbound routing: the number each SMS left from -----------------------------------
def _upgrade_routing() -> None:
    op.add_column("sms_outbox", sa.Column("from_number", sa.String(20)))
    # SMS already sent by an account with its own number left from it; the others left
    # from the shared number, which the database does not know: they stay null, and
    # null counts as the shared number (server/store/sms.py shared_number_threads).
    op.execute("UPDATE sms_outbox SET from_number = (SELECT sms_number FROM accounts "
               "WHERE accounts.id = sms_outbox.account_id) WHERE status = 'sent'")


def _downgrade_routing() -> None:
    with op.batch_alter_table("sms_outbox") as batch:
        batch.drop_column("from_number")
