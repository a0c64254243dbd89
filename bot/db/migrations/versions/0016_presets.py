"""generation presets: named sets of /generate options of a member or a server

Rows live until deleted with /preset delete; a member's own presets are deleted at /logout.

Revision ID: 0016
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generation_presets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("name_key", sa.String(50), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("scope", "owner_id", "name_key", name="uq_generation_presets_name"),
    )


def downgrade() -> None:
    op.drop_table("generation_presets")
