"""cut-off sends: how many times a job's POST left and its process stopped before storing the answer

`interrupted_sends` on `generation_jobs` and `alchemy_text_jobs`. A job left `submitting` by a process that
stopped (a crash, `kill -9`) may or may not have reached the Horde, which has no idempotency on its creating
POSTs: the process that resumes it sends it once more (the member would have asked again anyway), and fails
it if that send is cut off too. A count on the job's own row, no member data; it lives as long as the row
(the retention rules are unchanged).

Revision ID: 0020
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

TABLES = ("generation_jobs", "alchemy_text_jobs")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("interrupted_sends", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("interrupted_sends")
