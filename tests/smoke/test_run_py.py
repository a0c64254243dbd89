"""Smoke tests of the real entry point: ``python run.py`` against a fake Discord and a fake AI Horde.

These start the bot as a separate process, exactly as a self-hoster would, with a config file copied from
``config.example.toml`` (only the network endpoints, the database and the key file are redirected), and
talk to it over loopback HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.fakes.discord_server import FakeChannel, FakeDiscord, FakeGuild, FakeMember, snowflake_on_shard
from tests.fakes.horde import FakeHorde
from tests.support.run_py import (
    DISCORD_TOKEN,
    RUN_PY,
    START_TIMEOUT,
    bot_env,
    example_config,
    run_bot,
    smoke_config,
    write_config,
)

HORDE_KEY = "smoke-Key-0123456789ab"  # 22 characters, like a real Horde key

pytestmark = pytest.mark.processes


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


async def test_without_shard_settings_the_bot_runs_the_shards_discord_recommends(
    tmp_path: Path, fake_horde: FakeHorde
) -> None:
    """No `discord.shard_count`: the bot asks Discord (GET /gateway/bot) and runs every recommended shard,
    each hearing its own servers; a member on either shard gets an answer."""
    assert fake_horde.base_url is not None
    fake = FakeDiscord(token=DISCORD_TOKEN, recommended_shards=2)
    places = []
    for shard in (0, 1):
        guild = fake.add_guild(f"Shard {shard}", guild_id=snowflake_on_shard(shard, 2))
        places.append((guild, fake.add_channel(guild.id, "general"), fake.add_member(guild.id, f"m{shard}")))
    await fake.start()
    try:
        config = write_config(tmp_path / "config.toml", smoke_config(tmp_path, fake, fake_horde.base_url))
        env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())
        async with run_bot(config, tmp_path, env) as bot:
            await bot.until(fake.wait_until_ready(timeout=START_TIMEOUT, shards=[0, 1]), "both shards")
            await bot.until(fake.wait_for_commands("terms", timeout=START_TIMEOUT), "command sync")
            for guild, channel, member in places:
                asked = await fake.send_slash(guild.id, channel.id, member.id, "terms")
                reply = await bot.until(fake.wait_for_reply(asked, timeout=20), "the answer to /terms")
                assert reply.ephemeral and reply.text
            code = await bot.terminate()
        assert code == 0, bot.report()
        assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
        assert [r.template for r in fake.requests].count("/gateway/bot") == 1
        # Each /terms reached the process on the connection of its server's shard only.
        assert [s for s, event in fake.dispatched if event == "INTERACTION_CREATE"] == [0, 1]
        assert "Traceback" not in bot.output, bot.report()
        assert fake.protocol_errors == [] and fake.spec_violations == []
    finally:
        await fake.stop()


async def test_members_logging_in_at_once_each_link_their_own_account(
    tmp_path: Path, discord_world: DiscordWorld, fake_horde: FakeHorde
) -> None:
    """discord.py finds the form a submission belongs to by the form's custom id alone: forms sharing one id
    would each take whichever member's key was typed last. Six members submit their keys at once."""
    fake, guild, channel = discord_world.fake, discord_world.guild, discord_world.channel
    assert fake_horde.base_url is not None
    members = [fake.add_member(guild.id, f"member{i}") for i in range(6)]
    accounts = {m.id: fake_horde.add_user(f"horde{i}") for i, m in enumerate(members)}
    config = write_config(tmp_path / "config.toml", smoke_config(tmp_path, fake, fake_horde.base_url))
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())
    async with run_bot(config, tmp_path, env) as bot:
        await bot.until(fake.wait_until_ready(timeout=START_TIMEOUT), "IDENTIFY / READY")
        await bot.until(fake.wait_for_commands("login", timeout=START_TIMEOUT), "command sync")
        shown = [await fake.send_slash(guild.id, channel.id, m.id, "login") for m in members]
        submitted = await asyncio.gather(
            *(
                fake.submit_modal(form, {"login:apikey": accounts[form.user.id].apikey or ""}, timeout=20)
                for form in shown
            )
        )
        replies = [await bot.until(fake.wait_for_reply(s, timeout=20), "a login answer") for s in submitted]
        code = await bot.terminate()
    assert code == 0, bot.report()
    linked_as = {s.user.id: r.text for s, r in zip(submitted, replies, strict=True)}
    for member in members:
        assert accounts[member.id].username in linked_as[member.id], linked_as[member.id]


async def test_an_old_key_name_starts_the_bot_with_one_warning_saying_where_it_lives_now(
    tmp_path: Path, discord_world: DiscordWorld, fake_horde: FakeHorde
) -> None:
    """A config.toml copied from an older config.example.toml still has `[ratings] keep_days`: the bot
    starts as before, and its log says once, at start-up, that the key is now `[retention] rating_images`."""
    fake = discord_world.fake
    assert fake_horde.base_url is not None
    settings = smoke_config(tmp_path, fake, fake_horde.base_url)
    del settings["retention"]["rating_images"]  # the older example had no [retention] section's key
    settings["ratings"]["keep_days"] = 7
    config = write_config(tmp_path / "config.toml", settings)
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())
    async with run_bot(config, tmp_path, env) as bot:
        await bot.until(fake.wait_until_ready(timeout=START_TIMEOUT), "IDENTIFY / READY")
        await bot.until(fake.wait_for_commands("login", timeout=START_TIMEOUT), "command sync")
        code = await bot.terminate()
    assert code == 0, bot.report()
    notices = [line for line in bot.stderr if "keep_days" in line]
    assert len(notices) == 1, bot.report()
    assert "WARNING" in notices[0], notices[0]
    assert f"{config}: ratings.keep_days is now retention.rating_images" in notices[0], notices[0]
    assert "Traceback" not in bot.output, bot.report()
