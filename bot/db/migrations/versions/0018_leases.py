"""leases: the work several processes share is held by one process at a time; a role-sync cursor per shard set

`claimed_by` (the holding process) and `lease_until` (when its claim runs out unless renewed) on the tables
of shared work: `generation_jobs`, `alchemy_text_jobs`, `kudos_gifts`, `rating_votes`,
`generation_ratings`, with an index on both (renewals scan by holder, takeovers by expiry). They name a
process and a time, no member data, and live as long as their row (the rows' retention rules are
unchanged). Rows of an earlier single process start unclaimed: the first process to resume takes them.

`role_sync_state` gets `scope` (the shard set whose servers the cursor walks, "all" for one process with
every shard, the existing row): each process keeps its own cursor.

Revision ID: 0018
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0018"
down_revision = "0019"
branch_labels = None
depends_on = None

LEASED = ("generation_jobs", "alchemy_text_jobs", "kudos_gifts", "rating_votes", "generation_ratings")


def upgrade() -> None:
    for table in LEASED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
            batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
            batch.create_index(f"ix_{table}_lease", ["claimed_by", "lease_until"])
    with op.batch_alter_table("role_sync_state") as batch:
        batch.add_column(sa.Column("scope", sa.String(64), nullable=False, server_default="all"))
        batch.create_index("ux_role_sync_state_scope", ["scope"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("role_sync_state") as batch:
        batch.drop_index("ux_role_sync_state_scope")
        batch.drop_column("scope")
    for table in reversed(LEASED):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_lease")
            batch.drop_column("lease_until")
            batch.drop_column("claimed_by")
