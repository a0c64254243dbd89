"""reply tokens: a job's interaction token, encrypted, for the 15 minutes it lives

`reply_token` and `reply_expires_at` on `generation_jobs` and `alchemy_text_jobs`. The token of the command
that asked for a job lets whichever process delivers it (after a restart or a takeover, issue #17) read and
edit the command's reply, so a result a stopped process already showed there is found, not sent again. A
credential for 15 minutes: Fernet-encrypted like the API keys (`bot.crypto.KeyCipher`), cleared when the job
ends, and cleared by the retention rule `reply_tokens` once expired. No member data.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

TABLES = ("generation_jobs", "alchemy_text_jobs")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("reply_token", sa.Text(), nullable=True))
            batch.add_column(sa.Column("reply_expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("reply_expires_at")
            batch.drop_column("reply_token")
