"""Sharding: the settings, Discord's shard formula, and the per-server filter of background work."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from discord.ext import commands

from bot.app import create_bot
from bot.bot import ShardedHordeBot
from bot.config import ConfigError, Settings, load_settings
from bot.shards import ALL_SHARDS, ShardScope, shard_of
from tests.conftest import make_settings
from tests.support.runtime import runtime_of


def _load(tmp_path: Path, discord: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\n{discord}\n")
    env = {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    return load_settings(path, env)


def test_shard_settings_default_to_automatic(tmp_path: Path) -> None:
    settings = load_settings(
        Path(__file__).resolve().parent.parent / "config.example.toml",
        {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()},
    )
    assert settings.discord.shard_count is None and settings.discord.shard_ids == ()


def test_shard_settings_are_read(tmp_path: Path) -> None:
    settings = _load(tmp_path, "shard_count = 4\nshard_ids = [2, 3]")
    assert settings.discord.shard_count == 4
    assert settings.discord.shard_ids == (2, 3)


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("shard_count = 0", "discord.shard_count", "between 1 and 10000"),
        ('shard_count = "4"', "discord.shard_count", "must be a whole number"),
        ("shard_ids = [0]", "discord.shard_ids", "needs discord.shard_count"),
        ("shard_count = 2\nshard_ids = [2]", "discord.shard_ids", "from 0 to 1"),
        ("shard_count = 2\nshard_ids = [1, 1]", "discord.shard_ids", "different numbers"),
        ('shard_count = 2\nshard_ids = ["a"]', "discord.shard_ids", "item 1 must be a whole number"),
    ],
)
def test_bad_shard_settings_name_the_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, body)
    assert caught.value.key == key and problem in caught.value.problem


def test_discords_shard_formula() -> None:
    # A snowflake's top bits are its creation time: (id >> 22) % count is Discord's documented formula.
    assert shard_of(41771983423143937, 1) == 0
    assert shard_of(41771983423143937, 4) == (41771983423143937 >> 22) % 4
    assert [shard_of(n << 22, 4) for n in range(6)] == [0, 1, 2, 3, 0, 1]


def test_scope_owns_only_the_servers_of_its_shards() -> None:
    first, second = ShardScope(4, (0, 1)), ShardScope(4, (2, 3))
    guilds = [(n << 22) | 12345 for n in range(40)]
    for guild_id in guilds:
        # Every server belongs to exactly one of two processes splitting the shards.
        assert first.owns(guild_id) != second.owns(guild_id)
    assert first.owns(0 << 22) and first.owns(1 << 22) and not first.owns(2 << 22)
    # No server: a DM belongs to the process with shard 0.
    assert first.owns(None) and not second.owns(None)
    # One process with every shard, or no sharding settings: everything is this process's.
    assert ALL_SHARDS.owns(2 << 22) and ShardScope(4, (0, 1, 2, 3)).owns(3 << 22) and ShardScope(4).owns(7)


def test_the_bot_connects_the_configured_shards(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9/api")
    sharded = replace(settings, discord=replace(settings.discord, shard_count=4, shard_ids=(2, 3)))
    bot = create_bot(sharded)
    assert isinstance(bot, ShardedHordeBot) and isinstance(bot, commands.AutoShardedBot)
    assert bot.shard_count == 4 and bot.shard_ids == [2, 3]
    automatic = create_bot(settings)
    # No sharding settings: discord.py asks Discord for the recommended count and runs every shard here.
    assert isinstance(automatic, commands.AutoShardedBot)
    assert automatic.shard_count is None and automatic.shard_ids is None


async def test_party_ends_run_only_for_this_process_servers(tmp_path: Path) -> None:
    """Two processes split four shards over one database: when parties are due, each ends (and posts in)
    only its own servers' parties, so no party ends twice and none is left running."""
    from bot.app import build_runtime, build_services
    from bot.db.parties import PartyRepository
    from tests.support.clock import TestClock

    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    guilds = {shard: (shard << 22) | 99 for shard in range(4)}
    processes = []
    for ids in ((0, 1), (2, 3)):
        base = make_settings(tmp_path, "http://127.0.0.1:9/api")
        settings = replace(base, discord=replace(base.discord, shard_count=4, shard_ids=ids))
        services = build_services(build_runtime(settings, clock=TestClock()))
        await runtime_of(services).db.connect()
        processes.append(services)
    first, second = processes
    try:
        repo = PartyRepository(runtime_of(first).db)  # one database file for both processes
        for shard, guild_id in guilds.items():
            await repo.add(
                guild_id=guild_id, channel_id=1, host_id=100 + shard, name="p", style="s", award=1,
                recurring=False, started_at=start, ends_at=start + timedelta(minutes=30),
            )  # fmt: skip
        for services in processes:
            assert isinstance(services.clock, TestClock)
            services.clock.advance(3600)
        await first.parties.end_due()
        still = sorted(p.guild_id for p in await repo.active())
        assert still == [guilds[2], guilds[3]], "the first process ended only its shards' parties"
        await second.parties.end_due()
        assert await repo.active() == []
    finally:
        for services in processes:
            await runtime_of(services).http.aclose()
            await runtime_of(services).db.close()


def test_processes_sharing_an_ip_split_its_limits() -> None:
    """`horde_pacer.processes`: per-IP limits are divided among the processes, per-key limits are not."""
    from bot.config import ConfigError as Error
    from bot.horde.pacer import Limit, PacerSettings

    one = PacerSettings.from_section({}).limits()
    two = PacerSettings.from_section({"processes": 2}).limits()
    assert one["image"][0] == Limit(2, 1.0) and two["image"][0] == Limit(2, 2.0)  # 1 a second each
    assert two["image"][1] == one["image"][1] == Limit(2, 1.0, per_key=True)
    assert two["alchemy"] == (Limit(90, 120.0),) and two["kudos"] == one["kudos"]
    with pytest.raises(Error, match=r"horde_pacer\.processes"):
        PacerSettings.from_section({"processes": 0})
