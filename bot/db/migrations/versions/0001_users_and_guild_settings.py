"""users and guild settings

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("discord_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("horde_user_id", sa.Integer(), nullable=False),
        sa.Column("horde_username", sa.String(255), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=False),
        sa.Column("linked_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_users_horde_user_id", "users", ["horde_user_id"])
    op.create_table(
        "guild_settings",
        sa.Column("guild_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("guild_settings")
    op.drop_index("ix_users_horde_user_id", "users")
    op.drop_table("users")
