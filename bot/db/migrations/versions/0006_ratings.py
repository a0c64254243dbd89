"""image ratings: served images, members' ratings, ratings of own generations

Revision ID: 0006
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from bot.db.types import UTCDateTime

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rating_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("is_party", sa.Boolean(), nullable=False),
        sa.Column("image_id", sa.String(100), nullable=False),
        sa.Column("dataset_id", sa.String(100), nullable=True),
        sa.Column("requested_dataset", sa.String(100), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_rating_images_party_state", "rating_images", ["is_party", "state"])
    op.create_table(
        "rating_votes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "image_row_id",
            sa.Integer(),
            sa.ForeignKey("rating_images.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("discord_id", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("artifacts", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("error", sa.String(400), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("image_row_id", "discord_id", name="uq_rating_votes_image_member"),
    )
    op.create_index("ix_rating_votes_guild_member", "rating_votes", ["guild_id", "discord_id"])
    op.create_index("ix_rating_votes_state", "rating_votes", ["state"])
    op.create_table(
        "generation_ratings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("discord_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("preview_urls", sa.JSON(), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("error", sa.String(400), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_generation_ratings_guild_member", "generation_ratings", ["guild_id", "discord_id"])
    op.create_index("ix_generation_ratings_state", "generation_ratings", ["state"])
    op.create_table(
        "generation_rating_items",
        sa.Column(
            "rating_id",
            sa.Integer(),
            sa.ForeignKey("generation_ratings.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("artifacts", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("generation_rating_items")
    op.drop_index("ix_generation_ratings_state", "generation_ratings")
    op.drop_index("ix_generation_ratings_guild_member", "generation_ratings")
    op.drop_table("generation_ratings")
    op.drop_index("ix_rating_votes_state", "rating_votes")
    op.drop_index("ix_rating_votes_guild_member", "rating_votes")
    op.drop_table("rating_votes")
    op.drop_index("ix_rating_images_party_state", "rating_images")
    op.drop_table("rating_images")
