"""data lifecycle: img2img sources out of job rows, indexes for the retention prune

Revision ID: 0015
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0015"
down_revision = "0016"
branch_labels = None
depends_on = None

_BATCH = 200


def upgrade() -> None:
    op.create_table(
        "image_sources",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
    )
    op.create_index("uq_image_sources_owner_digest", "image_sources", ["owner_id", "digest"], unique=True)
    op.create_index("ix_image_sources_last_used", "image_sources", ["last_used_at"])
    op.add_column("generation_jobs", sa.Column("source_id", sa.Integer(), nullable=True))
    op.create_index("ix_generation_jobs_updated_at", "generation_jobs", ["updated_at"])
    op.create_index("ix_alchemy_text_jobs_updated_at", "alchemy_text_jobs", ["updated_at"])
    op.create_index("ix_chat_turns_created_at", "chat_turns", ["created_at"])
    _strip_sources()


def _strip_sources() -> None:
    """Old rows carry the img2img source as base64 in the payload: drop it (Regenerate on those says the
    source is gone and asks for it again). In id order and batches, so a large table needs no large memory."""
    jobs = sa.table("generation_jobs", sa.column("id", sa.Integer()), sa.column("payload", sa.JSON()))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(jobs.c.id, jobs.c.payload).where(jobs.c.id > last).order_by(jobs.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        for job_id, payload in rows:
            if isinstance(payload, dict) and payload.get("source_image"):
                stripped = {k: v for k, v in payload.items() if k != "source_image"}
                conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(payload=stripped))
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_chat_turns_created_at", "chat_turns")
    op.drop_index("ix_alchemy_text_jobs_updated_at", "alchemy_text_jobs")
    op.drop_index("ix_generation_jobs_updated_at", "generation_jobs")
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_column("source_id")
    op.drop_table("image_sources")
