"""parties: the host's shared key paying the thread's generations, and the words prompts must contain

New nullable columns of `kudos_parties`, which live as long as their party row (`retention.parties`): the
word list, the party's shared key (encrypted; cleared when the party ends and the key is deleted), the
kudos given to the key and what it spent.

Revision ID: 0019
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kudos_parties") as batch:
        batch.add_column(sa.Column("words", sa.Text(), nullable=True))
        batch.add_column(sa.Column("key_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("key_kudos", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("kudos_spent", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kudos_parties") as batch:
        batch.drop_column("kudos_spent")
        batch.drop_column("key_kudos")
        batch.drop_column("key_encrypted")
        batch.drop_column("words")
