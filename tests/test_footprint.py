"""What the bot's process keeps for its whole run: modules only some starts need are imported then, and
glibc keeps few malloc arenas.

Measured in fresh interpreters (this test process has imported everything already, and has its threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.sqlite_template import place_migrated_database

ROOT = Path(__file__).resolve().parent.parent

# Connects to a database at the migration head the way `run.py` does, then lists which of these
# modules were imported.
PROBE = """
import asyncio, json, sys
UNUSED = ("alembic", "mako", "bot.db.migrate", "httpx._main", "click", "rich", "pygments")
import bot.app
from bot.db import Database

async def main():
    db = Database(sys.argv[1])
    await db.connect()
    await db.close()

asyncio.run(main())
print(json.dumps(sorted(m for m in UNUSED if sys.modules.get(m) is not None)))
"""


async def test_a_start_at_the_migration_head_imports_neither_alembic_nor_httpxs_command_line(
    tmp_path: Path,
) -> None:
    # Alembic and Mako are ~5 MB of modules kept for the process's life; a database at the head needs
    # neither (Database.connect reads the stored revision itself). httpx's command-line client (click,
    # rich, pygments: installed here for import-linter) is never used by the bot (bot/__init__.py).
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    await place_migrated_database(url)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, url], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []


# Four threads allocate at once, then glibc lists its arenas (malloc_stats prints "Arena N:" for each).
ARENAS = """
import ctypes, sys, threading
from bot.malloc import limit_arenas

if sys.argv[1] == "limit":
    assert limit_arenas()
start = threading.Barrier(4)

def allocate():
    start.wait()
    kept = [bytearray(4096) for _ in range(200)]
    start.wait()

threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(mode: str, env: dict[str, str], script: str = ARENAS) -> int:
    probe = subprocess.run(
        [sys.executable, "-c", script, mode], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert probe.returncode == 0, probe.stderr
    return sum(1 for line in probe.stderr.splitlines() if line.startswith("Arena "))


def test_the_bot_keeps_two_malloc_arenas_however_many_threads_allocate() -> None:
    # bot/malloc.py: memory freed in one thread's arena stays there; with every thread its own arena, the
    # benchmark's peak was 8-11 MiB higher. run.py (and the benchmark) call limit_arenas() first thing.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert arenas("default", env) > 2  # the main thread's and one per thread: what the cap is for
    assert arenas("limit", env) == 2
    # An operator's own MALLOC_ARENA_MAX is left alone.
    operator = subprocess.run(
        [sys.executable, "-c", "from bot.malloc import limit_arenas; print(limit_arenas())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MALLOC_ARENA_MAX": "4"},
        check=True,
    )
    assert operator.stdout.strip() == "False"


def test_run_py_caps_the_arenas_before_anything_else(tmp_path: Path) -> None:
    # Arenas made before the cap stay: run.py caps them first thing, even when it then stops at once (here:
    # no config file, exit 2); threads started afterwards in that process share two arenas.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    missing = str(tmp_path / "missing.toml")
    after_run = ARENAS.replace(
        "from bot.malloc import limit_arenas",
        f"import run\nassert run.main(['--config', {missing!r}, '--env-file', {missing!r}]) == 2",
    )
    assert arenas("run.py", env, after_run) == 2
