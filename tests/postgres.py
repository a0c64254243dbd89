"""A throwaway PostgreSQL server for tests: `initdb` into a temp folder, listen on 127.0.0.1 only.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` system
user (via `runuser`). Returns None when no PostgreSQL binaries are installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14")]


def _bin_dir() -> Path | None:
    for candidate in BIN_DIRS:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yields an asyncpg SQLAlchemy URL for a fresh database, or None if PostgreSQL is not installed."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="hordebot-pg-"))
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "hordebot", "-A", "trust", "--no-sync")
    pg(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "hordebot", "hordebot")
        yield f"postgresql+asyncpg://hordebot@127.0.0.1:{port}/hordebot"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
