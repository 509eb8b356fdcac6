"""The patient's secure session: link failure counts and locks, one-time codes, and the
account setting that always asks for a code.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from server.store.tables import AutoId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("secure_links", sa.Column("failures", sa.Integer, nullable=False,
                                            server_default="0"))
    op.add_column("secure_links", sa.Column("locked_at", UTCDateTime))
    op.add_column("accounts", sa.Column("require_code", sa.Boolean, nullable=False,
                                        server_default=sa.false()))
    op.create_table(
        "link_codes",
        sa.Column("id", AutoId, nullable=False, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_link_codes"),
        sa.ForeignKeyConstraint(["token_hash"], ["secure_links.token_hash"],
                                name="fk_link_codes_token_hash_secure_links"),
    )
    op.create_index("ix_link_codes_token_hash", "link_codes", ["token_hash"])


def downgrade() -> None:
    op.drop_table("link_codes")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("require_code")
    with op.batch_alter_table("secure_links") as batch:
        batch.drop_column("locked_at")
        batch.drop_column("failures")
