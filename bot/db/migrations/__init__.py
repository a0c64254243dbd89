"""The schema's migrations (Alembic scripts in `versions/`, run by `bot.db.migrate`)."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent
# The newest revision(s): a database that stores exactly these needs no migration, so starting the bot
# doesn't import Alembic. A new migration changes this too (tests/test_repositories.py compares it with
# Alembic's own view); if it is forgotten, every start simply runs Alembic, which finds nothing to do.
HEADS = frozenset({"0025"})
