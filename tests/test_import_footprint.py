"""What the bot loads and keeps for its whole run: modules only some starts need are imported then.

Measured in a fresh interpreter (this test process has imported everything already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.sqlite_template import place_migrated_database

ROOT = Path(__file__).resolve().parent.parent

# Connects to a database at the migration head the way `run.py` does, then lists which of these
# modules were imported.
PROBE = """
import asyncio, json, sys
import bot.app
from bot.db import Database

async def main():
    db = Database(sys.argv[1])
    await db.connect()
    await db.close()

asyncio.run(main())
print(json.dumps(sorted(m for m in ("alembic", "mako", "bot.db.migrate") if m in sys.modules)))
"""


async def test_a_start_at_the_migration_head_does_not_import_alembic(tmp_path: Path) -> None:
    # Alembic and Mako are ~5 MB of modules kept for the process's life; a database at the head needs
    # neither (Database.connect reads the stored revision itself).
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    await place_migrated_database(url)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, url], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []
