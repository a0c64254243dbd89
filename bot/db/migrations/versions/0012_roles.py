"""automated roles: sync cursor, remembered role problems, workers seen online

Revision ID: 0012
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "role_sync_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("pass_started_at", UTCDateTime(), nullable=True),
        sa.Column("last_finished_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "role_problems",
        sa.Column("guild_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("role_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("noted_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "role_worker_seen",
        sa.Column("horde_user_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("online_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("role_worker_seen")
    op.drop_table("role_problems")
    op.drop_table("role_sync_state")
