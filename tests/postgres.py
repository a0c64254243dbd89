"""A throwaway PostgreSQL server for tests: `initdb` into a temp folder, listen on 127.0.0.1 only.

One server for the whole test run (`SharedPostgres`), started by the first xdist worker whose test asks for
PostgreSQL and used by the others (each server cost a worker ~1.2 s of CPU to `initdb`, start and migrate
its template, and the first PostgreSQL test of each worker waited for it); the pytest process that
started the run stops it at its end. Every test gets its own database, copied from a template that is
migrated once (`CREATE DATABASE ... TEMPLATE` copies files: a few milliseconds instead of running the
migration chain again), named after its worker, and dropped after the test.

Nothing here needs to survive the run, so the server lives in memory when the machine has room for it
(`/dev/shm`): each database is ~400 files, and creating, writing and deleting them on a disk (an ext4 with
`discard`, on the CI machine) made a PostgreSQL test wait ~0.3 s on the file system and the server's
clean-up at the end wait a minute under load. Databases are created and dropped with SQL on the server
rather than by starting `createdb` (`runuser`, a process and a connection each time).

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` system
user (via `runuser`). `find_bin_dir()` is None when no PostgreSQL binaries are installed: the caller decides
whether that is a skip (a developer's machine) or a failure (CI).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]
TEMPLATE = "hordebot_template"
# The server's files go to memory only with this much free there (the template and a test's database are
# ~8 MB each, the WAL up to ~64 MB); a small /dev/shm (Docker's default is 64 MB) keeps them on disk.
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private folder in it)
MEMORY_DIR_MIN_FREE = 1 << 30


def _data_parent() -> str | None:
    """Where the server's folder goes: memory when there is room, else the usual temporary folder."""
    try:
        stats = os.statvfs(MEMORY_DIR)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < MEMORY_DIR_MIN_FREE or not os.access(MEMORY_DIR, os.W_OK):
        return None
    return str(MEMORY_DIR)


def find_bin_dir() -> Path | None:
    for candidate in BIN_DIRS:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A running throwaway server; `new_database()` hands out fresh databases on it. `prefix` starts the
    names of the databases this process makes (several processes share a server: `SharedPostgres`)."""

    def __init__(self, bin_dir: Path, *, prefix: str = "") -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hordebot-pg-", dir=_data_parent()))
        self.port = _free_port()
        self.prefix = prefix
        self._run_as: list[str] = []
        self._names = itertools.count(1)
        self._template_ready = False

    def state(self) -> dict[str, Any]:
        """What another process needs to use this server (`attached`)."""
        return {
            "bin_dir": str(self.bin_dir),
            "root": str(self.root),
            "port": self.port,
            "run_as": self._run_as,
        }

    @classmethod
    def attached(cls, state: dict[str, Any], *, prefix: str) -> PostgresServer:
        """The server another process started (and migrated the template of), from its `state()`."""
        server = cls.__new__(cls)
        server.bin_dir = Path(state["bin_dir"])
        server.root = Path(state["root"])
        server.port = int(state["port"])
        server.prefix = prefix
        server._run_as = list(state["run_as"])
        server._names = itertools.count(1)
        server._template_ready = True
        return server

    def _pg(self, *args: str) -> None:
        subprocess.run([*self._run_as, *args], check=True, capture_output=True, timeout=120)

    def _client(self, tool: str, *args: str) -> None:
        self._pg(str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", "hordebot", *args)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://hordebot@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._pg(str(self.bin_dir / "initdb"), "-D", str(data), "-U", "hordebot", "-A", "trust", "--no-sync")
        # No durability needed for a throwaway server: fsync and synchronous commit off make it fast. A small
        # WAL keeps it from growing to its 1 GB default in memory (checkpoints cost nothing without fsync);
        # the tests' databases are tiny: 16 MB of buffers, not 128. Every xdist worker's tests connect to it.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400 "
            "-c max_wal_size=64MB -c min_wal_size=32MB -c shared_buffers=16MB"
        )
        self._pg(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
            "-o",
            options,
        )
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(
            [
                *self._run_as,
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def empty_database(self) -> str:
        """A new database without any table (for the migration chain)."""
        name = f"{self.prefix}empty_{next(self._names)}"
        self._client("createdb", name)
        return self.url(name)

    def new_database(self) -> str:
        """A new database at the migration head, copied from the template."""
        self.make_template()
        name = f"{self.prefix}test_{next(self._names)}"
        # FILE_COPY copies the template's files; the default (WAL_LOG, PostgreSQL 15+) also writes all of
        # them to the WAL, which costs the server more for a database this small.
        strategy = " STRATEGY = FILE_COPY" if self._version() >= 15 else ""
        self._sql(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"{strategy}')
        return self.url(name)

    def make_template(self) -> None:
        if not self._template_ready:
            self._client("createdb", TEMPLATE)
            # In a thread of its own: the first test to ask for the server may be running an event loop.
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, _migrate(self.url(TEMPLATE))).result()
            self._template_ready = True

    def drop_database(self, url: str) -> None:
        """Drop a database `new_database` made, closing any connection a test left open to it."""
        name = url.rsplit("/", 1)[1]
        self._sql(f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if self._version() >= 13 else ""))

    def _version(self) -> int:
        return int((self.root / "data" / "PG_VERSION").read_text().split(".")[0])

    def _sql(self, statement: str) -> None:
        """Run one statement on the server's maintenance database (called between tests: no loop runs)."""
        asyncio.run(_execute(self.url("postgres"), statement))


async def _execute(url: str, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    from bot.db import Database

    db = Database(url)
    await db.connect()
    await db.close()


@contextmanager
def postgres_server() -> Iterator[PostgresServer | None]:
    """A started server, or None if PostgreSQL is not installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield None
        return
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class SharedPostgres:
    """The run's one server, shared through a folder made by the process that runs the session (the xdist
    controller, or pytest itself without workers) and handed to each worker. The first process to ask for
    the server starts it and migrates the template, under a lock, and leaves its `state()` in the folder;
    the others attach to it. `stop()`, by the session's process once every worker is done, stops it."""

    def __init__(self, folder: Path, *, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix

    @classmethod
    def new_run(cls) -> SharedPostgres:
        return cls(Path(tempfile.mkdtemp(prefix="hordebot-pg-run-")), prefix="")

    @property
    def _state_file(self) -> Path:
        return self.folder / "server.json"

    def server(self) -> PostgresServer | None:
        """The started server (started now if no process did yet), or None if PostgreSQL is not installed."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            return None
        with (self.folder / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._state_file.exists():
                return PostgresServer.attached(json.loads(self._state_file.read_text()), prefix=self.prefix)
            server = PostgresServer(bin_dir, prefix=self.prefix)
            try:
                server.start()
                server.make_template()
            except BaseException:
                server.stop()
                raise
            self._state_file.write_text(json.dumps(server.state()))
            return server

    def stop(self) -> None:
        """Stop the server if one was started, and remove everything."""
        if self._state_file.exists():
            PostgresServer.attached(json.loads(self._state_file.read_text()), prefix="").stop()
        shutil.rmtree(self.folder, ignore_errors=True)
