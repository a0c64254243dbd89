"""endings: how a job without a result ends, stored while the member is told

`ending` on `generation_jobs` and `alchemy_text_jobs`. A job that ends without a result (failed before it
could be sent, expired, cancelled) is `delivering` with its `ending` (and `error`) while the member is told,
then finished: a process stopped in between leaves it for the next one, which tells it again the way a
result is delivered again (through the command's reply, or with the job's nonce), so the notice is neither
lost nor repeated. A state name, no member data; cleared when the job ends.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

TABLES = ("generation_jobs", "alchemy_text_jobs")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("ending", sa.String(16), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("ending")
