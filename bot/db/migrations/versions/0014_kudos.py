"""kudos gifts, DM notices and generation parties

Revision ID: 0014
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kudos_gifts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(200), nullable=False, unique=True),
        sa.Column("idempotency_key", sa.String(80), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("emoji", sa.String(100), nullable=False),
        sa.Column("giver_id", sa.BigInteger(), nullable=False),
        sa.Column("receiver_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("party_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("horde_rc", sa.String(64), nullable=True),
        sa.Column("horde_response", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_kudos_gifts_state_due", "kudos_gifts", ["state", "next_attempt_at"])
    op.create_index("ix_kudos_gifts_receiver_state", "kudos_gifts", ["receiver_id", "state"])
    op.create_index("ix_kudos_gifts_giver", "kudos_gifts", ["giver_id"])
    op.create_index("ix_kudos_gifts_party", "kudos_gifts", ["party_id"])
    op.create_table(
        "kudos_notices",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "kudos_parties",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("style", sa.String(200), nullable=False),
        sa.Column("award", sa.Integer(), nullable=False),
        sa.Column("recurring", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_kudos_parties_state", "kudos_parties", ["state", "ends_at"])
    op.create_index("ix_kudos_parties_thread_id", "kudos_parties", ["thread_id"])


def downgrade() -> None:
    op.drop_table("kudos_parties")
    op.drop_table("kudos_notices")
    op.drop_table("kudos_gifts")
