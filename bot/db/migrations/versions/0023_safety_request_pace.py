"""safety request pace: each member's per-minute request limit, counted across processes

`safety_request_pace` holds one time per member (when their request bucket is full again), written by the
command gate of processes sharing a PostgreSQL database (issue #17); SQLite's single process counts in
memory and leaves it empty. A row is useless once its time has passed, and retention deletes it then;
`/logout` deletes the member's row.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_request_pace",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("full_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_safety_request_pace_full_at", "safety_request_pace", ["full_at"])


def downgrade() -> None:
    op.drop_index("ix_safety_request_pace_full_at", table_name="safety_request_pace")
    op.drop_table("safety_request_pace")
