"""Small units that need neither Discord nor the Horde: crypto, API key wrapper, scheduler, database start-up,
log redaction, the start-up heap freeze."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import weakref
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, text

from bot.app import freeze_startup_heap
from bot.crypto import KeyCipher, KeyDecryptionError
from bot.db import Database, DatabaseStartupError
from bot.horde.models import ApiKey
from bot.logs import RedactSecrets
from bot.scheduler import Scheduler
from tests.support.clock import TestClock


def test_cipher_round_trip_and_wrong_secret() -> None:
    key = ApiKey("abcdefghijklmnop")
    cipher = KeyCipher(Fernet.generate_key().decode())
    token = cipher.encrypt(key)
    assert "abcdefghijklmnop" not in token
    assert cipher.decrypt(token) == key
    with pytest.raises(KeyDecryptionError, match="HORDEBOT_SECRET_KEY"):
        KeyCipher(Fernet.generate_key().decode()).decrypt(token)
    with pytest.raises(KeyDecryptionError):
        cipher.decrypt("garbage")


def test_api_key_never_shows_itself() -> None:
    key = ApiKey.parse("  secretkey123\n456 ")
    assert key.reveal() == "secretkey123456"
    assert "secret" not in repr(key) and "secret" not in str(key) and "secret" not in f"{key}"
    assert ApiKey.anonymous().is_anonymous
    with pytest.raises(ValueError):
        ApiKey.parse("bad key!")


async def test_scheduler_runs_due_jobs_without_overlap_and_cancels_on_close() -> None:
    clock = TestClock(t=0.0)
    scheduler = Scheduler(clock)
    runs: list[float] = []
    gate = asyncio.Event()

    async def job() -> None:
        runs.append(clock.t)
        await gate.wait()

    scheduler.every("job", 10, job)
    once: list[int] = []

    async def one_off() -> None:
        once.append(1)

    scheduler.call_later("once", 5, one_off)
    await scheduler.tick()
    await asyncio.sleep(0)
    assert runs == [0.0] and once == []
    clock.t = 5
    await scheduler.tick()
    await asyncio.sleep(0)
    assert once == [1]
    clock.t = 20
    await scheduler.tick()  # previous run still blocked: no overlap
    await asyncio.sleep(0)
    assert runs == [0.0]
    gate.set()
    await asyncio.sleep(0)
    await scheduler.tick()
    await asyncio.sleep(0)
    assert runs == [0.0, 20]
    gate.clear()
    await scheduler.close()
    clock.t = 100
    await scheduler.tick()
    assert runs == [0.0, 20]


async def test_scheduler_logs_failing_job_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    clock = TestClock(t=0.0)
    scheduler = Scheduler(clock)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    scheduler.every("broken", 1, broken)
    await scheduler.tick()
    await asyncio.sleep(0)
    clock.t = 1
    await scheduler.tick()
    await asyncio.sleep(0)
    assert calls == 2
    assert "scheduled job broken failed" in caplog.text
    await scheduler.close()


async def test_database_file_missing_is_created(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'bot.db'}")
    await db.connect()
    assert (tmp_path / "new" / "bot.db").exists()
    await db.close()


async def test_database_read_only_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, which ignores permission bits, so the OS's answer is simulated (stdlib only)."""
    (tmp_path / "bot.db").write_bytes(b"")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    with pytest.raises(DatabaseStartupError, match="not readable and writable"):
        await db.connect()


async def test_database_read_only_file_as_root(tmp_path: Path) -> None:
    """Root ignores permission bits, so make the file unusable another way: a folder where it should be."""
    (tmp_path / "bot.db").mkdir()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    with pytest.raises(DatabaseStartupError, match="is a folder, not a database file"):
        await db.connect()


def test_log_filter_redacts_keys_and_tokens() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "headers %s", ({"apikey": "abcdefghij12345"},), None
    )
    RedactSecrets(("my-discord-token-value",)).filter(record)
    assert "abcdefghij12345" not in record.getMessage()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token my-discord-token-value", None, None)
    RedactSecrets(("my-discord-token-value",)).filter(record)
    assert record.getMessage() == "token ***"


async def test_database_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bot.db").write_bytes(b"this is not a database, just text " * 100)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    with pytest.raises(DatabaseStartupError) as info:
        await db.connect()
    assert str(info.value) == "cannot open or migrate the database: file is not a database"


async def test_sqlite_file_runs_in_wal_mode_so_readers_do_not_block_on_a_writer(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.connect()
    try:
        async with db.session() as session:
            mode = (await session.execute(text("PRAGMA journal_mode"))).scalar_one()
        assert mode == "wal"
    finally:
        await db.close()


async def test_sqlite_sessions_reuse_pooled_connections_and_writers_wait_their_turn(tmp_path: Path) -> None:
    """Issue #13: a pool instead of a new connection (thread, file, pragmas) per session. Many sessions at
    once open at most pool_size + max_overflow connections, each with busy_timeout set, and concurrent
    writers all commit (none fails with "database is locked")."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", pool_size=2, max_overflow=1)
    await db.connect()
    try:
        opened: list[object] = []
        event.listen(db.engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
        async with db.session() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))

        async def write(n: int) -> None:
            async with db.session() as session:
                await session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                await asyncio.sleep(0.001)  # hold the write transaction across a loop turn

        await asyncio.gather(*(write(n) for n in range(40)))
        for _ in range(20):
            async with db.session() as session:
                timeout = (await session.execute(text("PRAGMA busy_timeout"))).scalar_one()
        async with db.session() as session:
            count = (await session.execute(text("SELECT count(*) FROM t"))).scalar_one()
        assert count == 40
        assert timeout == 5000
        # 62 sessions; never more connections than pool_size + max_overflow (a new one each: 62).
        assert 1 <= len(opened) <= 3
        status = db.engine.pool.status()
        assert "Pool size: 2" in status
    finally:
        await db.close()


async def test_in_memory_sqlite_keeps_one_shared_connection() -> None:
    """An in-memory database exists only inside its connection: the pool must hand out that one."""
    db = Database("sqlite+aiosqlite://", pool_size=3)
    await db.connect()
    try:
        async with db.session() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
            await session.execute(text("INSERT INTO t (n) VALUES (1)"))
        async with db.session() as session:
            assert (await session.execute(text("SELECT n FROM t"))).scalar_one() == 1
    finally:
        await db.close()


async def test_sqlite_refuses_a_second_process(tmp_path: Path) -> None:
    """Two bot processes on one SQLite file would poll the same jobs and send the same gifts: the second
    is refused with a message that says what to do."""
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    first = Database(url)
    await first.connect()
    script = (
        "import asyncio, sys\n"
        "from bot.db import Database, DatabaseStartupError\n"
        "async def main():\n"
        f"    db = Database({url!r})\n"
        "    try:\n"
        "        await db.connect()\n"
        "    except DatabaseStartupError as exc:\n"
        "        print(exc); sys.exit(3)\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parent.parent
    try:
        refused = subprocess.run(
            [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode == 3, refused.stderr
        assert "another hordebot process is already using" in refused.stdout
        assert "use PostgreSQL for several" in refused.stdout
    finally:
        await first.close()
    # Once the first process is gone, the next one starts.
    allowed = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_freeze_startup_heap_collects_garbage_first_and_freezes_the_rest() -> None:
    class Node:
        other: Node | None = None

    cycle, kept = Node(), Node()
    cycle.other = cycle  # garbage only the collector can free
    gone = weakref.ref(cycle)
    del cycle
    assert any(o is kept for o in gc.get_objects())
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gone() is None  # collected, not frozen for good
        assert gc.get_freeze_count() > before
        assert not any(o is kept for o in gc.get_objects())  # out of the collector's rounds
    finally:
        gc.unfreeze()  # the test process goes on making and dropping bots
