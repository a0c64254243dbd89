"""Alembic, for when the schema is behind: imported only then (and by tools and tests).

Alembic and its Mako templates are several MB of modules a bot whose database is at the head never uses;
`Database.connect` reads the stored revision itself and imports this module only to upgrade."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from bot.db.migrations import MIGRATIONS


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "heads")
