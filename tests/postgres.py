"""A throwaway PostgreSQL server for tests: `initdb` into a temp folder, listen on 127.0.0.1 only.

One server per pytest process (per xdist worker), started the first time a test asks for PostgreSQL; every
test gets its own database, copied from a template that is migrated once (`CREATE DATABASE ... TEMPLATE`
copies files: a few milliseconds instead of running the migration chain again).

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` system
user (via `runuser`). `find_bin_dir()` is None when no PostgreSQL binaries are installed: the caller decides
whether that is a skip (a developer's machine) or a failure (CI).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]
TEMPLATE = "hordebot_template"


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
    """A running throwaway server; `new_database()` hands out fresh databases on it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hordebot-pg-"))
        self.port = _free_port()
        self._run_as: list[str] = []
        self._names = itertools.count(1)
        self._template_ready = False

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
        # No durability needed for a throwaway server: fsync and synchronous commit off make it fast.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
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
        name = f"empty_{next(self._names)}"
        self._client("createdb", name)
        return self.url(name)

    def new_database(self) -> str:
        """A new database at the migration head, copied from the template."""
        if not self._template_ready:
            self._client("createdb", TEMPLATE)
            asyncio.run(_migrate(self.url(TEMPLATE)))
            self._template_ready = True
        name = f"test_{next(self._names)}"
        self._client("createdb", "-T", TEMPLATE, name)
        return self.url(name)


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
