"""Engine, sessions and start-up migrations."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.db.migrations import HEADS

log = logging.getLogger(__name__)
MIGRATION_LOCK = 0x686F726465  # "horde": the advisory lock held while migrating PostgreSQL


class DatabaseStartupError(Exception):
    """The database cannot be opened or migrated; the message says what to fix."""


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _check_sqlite_file(path: Path) -> None:
    """Fail early with a readable reason: SQLite's own errors ("unable to open database file") don't say."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseStartupError(
            f"cannot create the database folder {path.parent}: {exc.strerror}"
        ) from None
    if path.is_dir():
        raise DatabaseStartupError(f"{path} is a folder, not a database file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseStartupError(f"the database file {path} is not readable and writable by this user")
    # SQLite writes a journal next to the file, so the folder must be writable too.
    if not os.access(path.parent, os.W_OK):
        raise DatabaseStartupError(f"the database folder {path.parent} is read-only")
    if not path.exists():
        # Created 0600 before SQLite opens it (SQLite would make it 0644; its -wal and -shm files copy the
        # database file's mode): the file holds encrypted keys, prompts and member ids.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseStartupError(f"cannot create the database file {path}: {exc.strerror}") from None


def _lock_sqlite(path: Path) -> IO[bytes]:
    """SQLite serves one bot process: a second one would poll the same jobs and send the same gifts. Hold
    a lock on `<file>.lock` while connected; a second process gets a clear refusal. (A POSIX record lock:
    the holder's own later connections, as after a restart in tests, are not refused; the OS drops it when
    the process dies, even by kill -9.)"""
    handle = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held until close()
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DatabaseStartupError(
            f"another hordebot process is already using {path}: SQLite serves one process. Stop the other "
            "one, or use PostgreSQL for several (README: Running at scale)"
        ) from None
    return handle


# One dialect and one compiled-statement cache per driver for every engine of the process. SQLAlchemy
# compiles each statement once per engine (its cache is keyed by the dialect object), so a process that opens
# many databases in turn, as the test suite does (one per test), compiled the same few hundred statements for
# each. The bot itself opens one engine: it keeps its own dialect and cache as before.
_SHARED_COMPILED: dict[tuple[str, str], tuple[Dialect, Any]] = {}


def _share_compiled_statements(engine: Engine) -> None:
    """Give `engine` the first engine of its driver's dialect and cache. Compiled SQL depends only on the
    dialect (the same driver in one process, configured the same way here), never on the database's data."""
    key = (engine.dialect.name, engine.dialect.driver)
    dialect, cache = _SHARED_COMPILED.setdefault(key, (engine.dialect, engine._compiled_cache))
    engine.dialect = dialect
    engine._compiled_cache = cache


class Database:
    def __init__(
        self, url: str, *, pool_size: int = 5, max_overflow: int = 10, exclusive: bool = True
    ) -> None:
        """`exclusive`: a SQLite file is refused to a second bot process (tools that are safe beside the bot,
        such as rotate-keys, pass False)."""
        self.url = url
        self.exclusive = exclusive
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._lock: IO[bytes] | None = None
        # SQLite has one writer at a time, and a storm of reactions opens many sessions at once: writes
        # through `write_session` queue here instead of failing with "database is locked" after
        # busy_timeout. PostgreSQL needs no such gate (row locks; unique indexes and conditional updates).
        self._write_gate = asyncio.Lock() if url.startswith("sqlite") else None

    @property
    def connected(self) -> bool:
        return self._engine is not None

    @property
    def shared(self) -> bool:
        """Several bot processes may use this database (PostgreSQL); a SQLite file is one process's (the bot
        locks it, `exclusive`)."""
        return not self.url.startswith("sqlite")

    @property
    def alone(self) -> bool:
        """No other bot process can use this database while this one is connected: a SQLite file this
        process holds the lock on (`exclusive`), or an in-memory SQLite database."""
        return self._lock is not None or (self.url.startswith("sqlite") and _sqlite_path(self.url) is None)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Database.connect() has not run")
        return self._engine

    async def connect(self) -> None:
        """Open the engine and bring the schema up to date."""
        sqlite = _sqlite_path(self.url)
        if sqlite is not None:
            _check_sqlite_file(sqlite)
            if self.exclusive:
                self._lock = _lock_sqlite(sqlite)
        self._engine = create_async_engine(self.url, **self._pool_options(sqlite))
        _share_compiled_statements(self._engine.sync_engine)
        if self.url.startswith("sqlite"):
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        try:
            async with self._engine.begin() as conn:
                if self._engine.dialect.name == "postgresql":
                    # Several processes may start at once on one database: one migrates, the others wait
                    # for it (the lock ends with this transaction) and then find the schema up to date.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                await conn.run_sync(_upgrade)
        except (SQLAlchemyError, OSError) as exc:
            await self.close()
            # The driver's own message, without SQLAlchemy's multi-line "background on this error" suffix.
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseStartupError(f"cannot open or migrate the database: {reason}") from exc

    def _pool_options(self, sqlite_file: Path | None) -> dict[str, object]:
        """A pool of open connections: a session reuses one instead of opening its own (for SQLite a new
        connection is a thread, a file open and three pragmas; for PostgreSQL a TCP and auth round trip).
        SQLite copes with several pooled connections thanks to WAL (readers never wait for the writer) and
        busy_timeout (a second writer waits its turn instead of failing with "database is locked")."""
        if self.url.startswith("sqlite") and sqlite_file is None:
            # In-memory: every connection would be a different, empty database; SQLAlchemy's default
            # (one shared connection, StaticPool) is the only pool that keeps the data.
            return {}
        options: dict[str, object] = {"pool_size": self.pool_size, "max_overflow": self.max_overflow}
        if not self.url.startswith("sqlite"):
            # A server may drop idle connections (restart, failover, idle timeout): test before use.
            options["pool_pre_ping"] = True
        return options

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            raise RuntimeError("Database.connect() has not run")
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """A session for writes that come in storms (kudos gifts): on SQLite they take turns here."""
        if self._write_gate is None:
            async with self.session() as session:
                yield session
            return
        async with self._write_gate, self.session() as session:
            yield session


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # Freed pages go back to the file system when the retention prune asks (`PRAGMA incremental_vacuum`).
    # Takes effect only on a database without tables yet (a new one): an existing file keeps its mode and
    # reuses freed pages instead. Must come before WAL, which writes the header.
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # WAL lets readers (polls, autocomplete) go on while one writer commits, instead of failing on a lock;
    # it sticks to the file, and an in-memory database simply answers "memory".
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL is still crash-safe and never corrupts; it skips the fsync on every commit (a
    # power cut may undo the last commits; a kudos gift whose "sent" is undone goes again with the same
    # Idempotency-Key, which the Horde applies once).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _stored_revisions(connection: Connection) -> set[str]:
    """What Alembic's version table says, read without Alembic (empty for a new database)."""
    if not connection.dialect.has_table(connection, "alembic_version"):
        return set()
    return {str(row[0]) for row in connection.execute(text("SELECT version_num FROM alembic_version"))}


def _upgrade(connection: Connection) -> None:
    # Most starts find the database at the head already: reading its version says so, without importing
    # Alembic (~5 MB of modules, kept for the process's life) or running its environment and every
    # migration script (~15 ms of CPU a start, and tests start the bot a few thousand times).
    if _stored_revisions(connection) == HEADS:
        return
    from bot.db import migrate  # only when there is something to migrate

    migrate.upgrade(connection)


def session_dialect(session: Any) -> str:
    """The database engine a session is bound to ("sqlite", "postgresql"; "" when unbound): for the few
    statements written differently per engine."""
    return str(session.bind.dialect.name) if session.bind is not None else ""


def upsert(session: Any, table: Any) -> Any:
    """`INSERT` for the session's engine that takes `ON CONFLICT` (`on_conflict_do_nothing`,
    `on_conflict_do_update`, `excluded`): SQLite and PostgreSQL each have their own construct with the same
    methods, and this is the one place that picks between them (an unbound session gets SQLite's)."""
    if session_dialect(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
