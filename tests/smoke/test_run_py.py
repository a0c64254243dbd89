"""Smoke tests of the real entry point: ``python run.py`` against a fake Discord and a fake AI Horde.

These start the bot as a separate process, exactly as a self-hoster would, with a config file copied from
``config.example.toml`` (only the network endpoints, the database and the key file are redirected), and
talk to it over loopback HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.fernet import Fernet

from tests.fakes.discord_server import FakeChannel, FakeDiscord, FakeGuild, FakeMember
from tests.fakes.horde import FakeHorde

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "run.py"
EXAMPLE_CONFIG = REPO / "config.example.toml"
DISCORD_TOKEN = "smoke-test-discord-token.not-a-real-one"
HORDE_KEY = "smoke-Key-0123456789ab"  # 22 characters, like a real Horde key
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

    async def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
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


# ------------------------------------------------------------------------------- fixtures


@dataclass
class DiscordWorld:
    fake: FakeDiscord
    guild: FakeGuild
    channel: FakeChannel
    alice: FakeMember


@pytest.fixture
async def discord_world() -> AsyncIterator[DiscordWorld]:
    fake = FakeDiscord(token=DISCORD_TOKEN)
    guild = fake.add_guild("Smoke Test Server")
    channel = fake.add_channel(guild.id, "general")
    alice = fake.add_member(guild.id, "alice")
    await fake.start()
    try:
        yield DiscordWorld(fake, guild, channel, alice)
    finally:
        await fake.stop()


@pytest.fixture
def fake_horde() -> Iterator[FakeHorde]:
    horde = FakeHorde()
    horde.start()
    try:
        yield horde
    finally:
        horde.stop()


# ------------------------------------------------------------------------------- tests


# INFO is the example's level; DEBUG is what a self-hoster turns on to chase a problem. Secrets must stay
# out of the output at both.
@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
async def test_login_end_to_end_and_clean_shutdown(
    tmp_path: Path, discord_world: DiscordWorld, fake_horde: FakeHorde, log_level: str
) -> None:
    fake = discord_world.fake
    assert fake_horde.base_url is not None
    fake_horde.add_user("smokey", apikey=HORDE_KEY, kudos=1234)
    settings = smoke_config(tmp_path, fake, fake_horde.base_url)
    settings.setdefault("logging", {})["level"] = log_level
    config = write_config(tmp_path / "config.toml", settings)
    secret_key = Fernet.generate_key().decode()
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=secret_key)

    async with run_bot(config, tmp_path, env) as bot:
        await bot.until(fake.wait_until_ready(timeout=START_TIMEOUT), "IDENTIFY / READY")
        commands = await bot.until(fake.wait_for_commands("login", timeout=START_TIMEOUT), "command sync")
        assert commands["login"]["description"]

        login = await fake.send_slash(
            discord_world.guild.id, discord_world.channel.id, discord_world.alice.id, "login"
        )
        opened = await bot.until(fake.wait_for_callback(login, timeout=15), "the /login modal")
        assert opened.modal is not None, f"/login answered with callback type {opened.type}, not a modal"
        field_ids = [
            c.get("custom_id")
            for row in opened.modal["components"]
            for c in [*row.get("components", []), row.get("component", {})]
        ]
        assert "login:apikey" in field_ids

        submitted = await fake.submit_modal(login, {"login:apikey": HORDE_KEY})
        reply = await bot.until(fake.wait_for_reply(submitted, timeout=20), "the answer to the login modal")
        assert reply.ephemeral, "the login confirmation must be ephemeral"
        assert "smokey" in reply.text, f"the reply does not show the Horde username: {reply!r}"

        code = await bot.terminate()

    assert code == 0, f"run.py exited with {code} after SIGTERM\n{bot.report()}"
    leaked = [line.replace(HORDE_KEY, "<THE KEY>") for line in bot.output.splitlines() if HORDE_KEY in line]
    assert not leaked, (
        f"the API key appeared in run.py's output ({len(leaked)} lines), first: {leaked[0][:300]}"
    )
    assert DISCORD_TOKEN not in bot.output, "the Discord token appeared in run.py's output"
    assert "Traceback" not in bot.output, bot.report()
    sent_to_discord = json.dumps([r.json for r in fake.requests], default=str)
    assert HORDE_KEY not in sent_to_discord, "the API key was sent to Discord"
    assert fake.spec_violations == [], "requests that break Discord's API schema:\n" + "\n".join(
        fake.spec_violations
    )
    assert fake.protocol_errors == [], "requests real Discord would refuse:\n" + "\n".join(
        fake.protocol_errors
    )


def _run_briefly(
    tmp_path: Path, config: Path | None, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(RUN_PY)]
    if config is not None:
        args += ["--config", str(config)]
    return subprocess.run(
        args, cwd=tmp_path, env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )


def _offline_config(tmp_path: Path) -> dict[str, dict[str, Any]]:
    config = example_config()
    # Nothing may be contacted: the process must stop at configuration.
    config["discord"].update(
        api_base_url="http://127.0.0.1:9/api/v10", gateway_url="ws://127.0.0.1:9/gateway"
    )
    config["horde"]["api_url"] = "http://127.0.0.1:9/api"
    config["database"]["url"] = f"sqlite+aiosqlite:///{tmp_path / 'hordebot.db'}"
    config.setdefault("security", {})["secret_key_file"] = str(tmp_path / "secret.key")
    return config


@pytest.mark.parametrize(
    ("case", "expected_key"),
    [
        ("missing DISCORD_TOKEN", "DISCORD_TOKEN"),
        ("invalid horde.max_retries", "horde.max_retries"),
        ("invalid discord.gateway_url", "discord.gateway_url"),
        ("missing config file", "config.toml"),
        ("misspelled generation key", "generation.max_stepz"),
    ],
)
def test_config_errors_are_one_clear_line(tmp_path: Path, case: str, expected_key: str) -> None:
    config = _offline_config(tmp_path)
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())
    config_path: Path | None = tmp_path / "config.toml"
    if case == "missing DISCORD_TOKEN":
        del env["DISCORD_TOKEN"]
    elif case == "invalid horde.max_retries":
        config["horde"]["max_retries"] = 99
    elif case == "invalid discord.gateway_url":
        config["discord"]["gateway_url"] = "http://not-a-websocket"
    elif case == "misspelled generation key":
        config.setdefault("generation", {})["max_stepz"] = 40
    elif case == "missing config file":
        config_path = None  # run.py's default, config.toml in the (empty) working directory
    if config_path is not None:
        write_config(config_path, config)

    result = _run_briefly(tmp_path, config_path, env)

    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 2, f"exit code {result.returncode}, output:\n{output}"
    assert "Traceback" not in output, output
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert expected_key in lines[0], lines[0]
    assert DISCORD_TOKEN not in output


def test_unusable_database_is_one_clear_line(tmp_path: Path) -> None:
    """A database that can't be opened stops start-up with one line, before Discord is contacted."""
    config = _offline_config(tmp_path)
    blocker = tmp_path / "hordebot.db"
    blocker.mkdir()  # a folder where the database file should be: unusable even for root
    write_config(tmp_path / "config.toml", config)
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())

    result = _run_briefly(tmp_path, tmp_path / "config.toml", env)

    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 1, f"exit code {result.returncode}, output:\n{output}"
    assert "Traceback" not in output, output
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert "database:" in lines[0] and "is a folder, not a database file" in lines[0]
