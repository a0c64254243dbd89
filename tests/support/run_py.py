"""``python run.py`` as a real process, as a self-hoster starts it: a config written from
``config.example.toml``, its output collected, stopped by SIGTERM (or killed). Used by the smoke tests, the
two-process scale test and bench/scale.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fakes.discord_server import FakeDiscord

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "run.py"
EXAMPLE_CONFIG = REPO / "config.example.toml"
DISCORD_TOKEN = "smoke-test-discord-token.not-a-real-one"
START_TIMEOUT = 60.0  # a cold start imports everything and runs the migrations


# ------------------------------------------------------------------------------- config and process


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, config: Mapping[str, Mapping[str, Any]]) -> Path:
    lines: list[str] = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def example_config() -> dict[str, dict[str, Any]]:
    with EXAMPLE_CONFIG.open("rb") as fh:
        return tomllib.load(fh)


def smoke_config(tmp_path: Path, fake: FakeDiscord, horde_url: str) -> dict[str, dict[str, Any]]:
    """config.example.toml with every endpoint on loopback and all state under tmp_path."""
    config = example_config()
    origin = horde_url.removesuffix("/api")
    config["discord"].update(
        api_base_url=fake.api_base_url,
        gateway_url=fake.gateway_url,
        sync_on_start=True,
    )
    config["horde"].update(
        api_url=horde_url,
        # Not served by the fake Horde: anything fetched from here 404s instead of leaving the machine.
        ratings_url=f"{origin}/ratings/api/v1",
        model_reference_url=f"{origin}/model-reference.json",
    )
    config["database"]["url"] = f"sqlite+aiosqlite:///{tmp_path / 'hordebot.db'}"
    config.setdefault("security", {})["secret_key_file"] = str(tmp_path / "secret.key")
    return config


def bot_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "HORDEBOT_SECRET_KEY")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def report(self) -> str:
        return f"--- run.py stdout ---\n{''.join(self.stdout)}--- run.py stderr ---\n{''.join(self.stderr)}"

    async def until(self, waiter: Awaitable[T], what: str) -> T:
        """Await ``waiter``, failing with the bot's output if the process dies first."""
        task = asyncio.ensure_future(waiter)
        died = asyncio.ensure_future(self.proc.wait())
        try:
            done, _ = await asyncio.wait({task, died}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            pytest.fail(
                f"run.py exited with {self.proc.returncode} while waiting for {what}\n{self.report()}"
            )
        finally:
            for t in (task, died):
                if not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

    async def kill(self) -> int:
        """SIGKILL: the process dies at once, without closing anything (a crash, an OOM kill)."""
        self.proc.send_signal(signal.SIGKILL)
        code = await self.proc.wait()
        await asyncio.gather(*self.readers)
        return code

    async def terminate(self, timeout: float = 20) -> int:
        self.stop()
        return await self.exited(timeout)

    def stop(self) -> None:
        """SIGTERM: the process is asked to stop (`docker stop`, a service manager's stop)."""
        self.proc.send_signal(signal.SIGTERM)

    async def exited(self, timeout: float) -> int:
        """The exit code of a process told to `stop`, once it has exited and its output is read."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"run.py did not exit within {timeout}s of SIGTERM\n{self.report()}")
        await asyncio.gather(*self.readers)
        return code


async def _pump(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
    if stream is None:
        return
    while line := await stream.readline():
        sink.append(line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def run_bot(config_path: Path, cwd: Path, env: Mapping[str, str]) -> AsyncIterator[BotProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUN_PY),
        "--config",
        str(config_path),
        cwd=cwd,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    bot = BotProcess(proc)
    bot.readers = [
        asyncio.create_task(_pump(proc.stdout, bot.stdout)),
        asyncio.create_task(_pump(proc.stderr, bot.stderr)),
    ]
    try:
        yield bot
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for reader in bot.readers:
            if not reader.done():
                reader.cancel()
        await asyncio.gather(*bot.readers, return_exceptions=True)
