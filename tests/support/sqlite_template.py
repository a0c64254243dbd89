"""A SQLite database already at the migration head, copied for each test instead of migrated anew.

Running the whole Alembic chain on an empty file costs every test a few hundred DDL round trips through
aiosqlite's thread (0.1-0.3 s, more on a loaded machine). Each test process migrates one template once and
copies the file; the bot's own start-up still runs `upgrade heads`, which finds it at the head and does
nothing. PostgreSQL tests do the same with `createdb -T` (tests/postgres.py). Tests of the migration chain
itself (tests/test_repositories.py) start from an empty database and never come through here.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from bot.db.database import Database

_template: Path | None = None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None for another engine or an in-memory database."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def _migrated_template() -> Path:
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="hordebot-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "template.db"
        db = Database(f"sqlite+aiosqlite:///{path}", exclusive=False)
        await db.connect()
        await db.close()
        # Closing the last connection checkpoints the WAL into the file; a leftover log would mean the copy
        # misses committed pages.
        assert not path.with_name(path.name + "-wal").exists(), "template WAL not checkpointed"
        _template = path
    return _template


async def place_migrated_database(url: str) -> None:
    """Put a migrated copy at `url`'s file unless something is there already (a restart, or a test that
    prepared its own database)."""
    target = sqlite_file(url)
    if target is None or target.exists():
        return
    template = await _migrated_template()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
