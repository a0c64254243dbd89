"""told: an end without a result told through a public reply, before its placeholder is removed

`told_at` on `alchemy_text_jobs`. A public reply's error is told privately (an ephemeral followup), then
the public placeholder is removed; a process stopped between the two left the placeholder, and the next one
told the error again. The followup can be neither read back (ephemeral) nor sent idempotently (Discord's
webhook execute takes no nonce), so the job records it right after: the process resuming a job found told
only removes the placeholder. A time, no member data; cleared when the job ends.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alchemy_text_jobs") as batch:
        batch.add_column(sa.Column("told_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alchemy_text_jobs") as batch:
        batch.drop_column("told_at")
