"""safety strikes (refused prompts, Horde rejections) and the Horde's IP timeouts

Revision ID: 0009
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_strikes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("cooldown_until", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_safety_strikes_user_created", "safety_strikes", ["user_id", "created_at"])
    op.create_table(
        "safety_ip_timeouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rc", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_safety_ip_timeouts_created_at", "safety_ip_timeouts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_safety_ip_timeouts_created_at", table_name="safety_ip_timeouts")
    op.drop_table("safety_ip_timeouts")
    op.drop_index("ix_safety_strikes_user_created", table_name="safety_strikes")
    op.drop_table("safety_strikes")
