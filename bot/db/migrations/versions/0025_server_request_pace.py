"""server request pace: a server's per-minute request limit counted across processes too

`safety_request_pace` (0023) held one time per member. It now holds one per member (`scope` "member") and
one per server ("server"), keyed by `(scope, subject_id)`: on a PostgreSQL database shared by several
processes a server's commands are counted there as its members' are, so a server whose shard moves between
processes isn't counted twice for a moment. SQLite's single process still counts both in memory and leaves
the table empty. A row is useless once its time has passed (a full bucket, as no row), and retention
deletes it then; `/logout` deletes the member's row (a server's holds no member data).

The rows are a minute's worth of counting: the table is made anew rather than converted (every bucket is
full once, at the upgrade).

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_safety_request_pace_full_at", table_name="safety_request_pace")
    op.drop_table("safety_request_pace")
    op.create_table(
        "safety_request_pace",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("subject_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("full_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_safety_request_pace_full_at", "safety_request_pace", ["full_at"])


def downgrade() -> None:
    op.drop_index("ix_safety_request_pace_full_at", table_name="safety_request_pace")
    op.drop_table("safety_request_pace")
    op.create_table(
        "safety_request_pace",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("full_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_safety_request_pace_full_at", "safety_request_pace", ["full_at"])
