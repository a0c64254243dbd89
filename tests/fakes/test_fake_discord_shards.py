"""The fake Discord shards as Discord does, proven against discord.py's AutoShardedBot in-process: one bot
that asks for the recommended count, and two "processes" (bots) with one shard each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord.ext import commands

from tests.fakes.discord_server import FakeDiscord, FakeDiscordError, FakeGuild, shard_of, snowflake_on_shard

TOKEN = "fake-bot-token"


class ShardBot(commands.AutoShardedBot):
    """Answers /where with the shard its server is on, as this bot sees it."""

    def __init__(self, name: str, shard_count: int | None = None, shard_ids: list[int] | None = None) -> None:
        shards: dict[str, Any] = {"shard_count": shard_count, "shard_ids": shard_ids}
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            allowed_mentions=discord.AllowedMentions.none(),
            **shards,
        )
        self.name = name

        @self.tree.command(name="where", description="Which bot and shard answer here")
        async def where(interaction: discord.Interaction) -> None:
            assert interaction.guild is not None
            await interaction.response.send_message(f"{self.name} shard {interaction.guild.shard_id}")

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s between two shards' IDENTIFYs (Discord's rate of session starts); the fake
        has no such limit."""

    async def setup_hook(self) -> None:
        await self.tree.sync()


@pytest.fixture
def discord_endpoints() -> Iterator[None]:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, *bots: ShardBot) -> AsyncIterator[None]:
    discord.http.Route.BASE = fake.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    runners = [asyncio.create_task(bot.start(TOKEN)) for bot in bots]
    try:
        for bot in bots:
            await asyncio.wait_for(bot.wait_until_ready(), 10)
        yield
    finally:
        for bot in bots:
            await bot.close()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 5)


def two_servers(fake: FakeDiscord) -> tuple[FakeGuild, FakeGuild]:
    """A server on shard 0 and one on shard 1 (of 2), each with a channel and a member."""
    guilds = []
    for shard in (0, 1):
        guild = fake.add_guild(f"Shard {shard} Server", guild_id=snowflake_on_shard(shard, 2))
        assert shard_of(guild.id, 2) == shard
        fake.add_channel(guild.id, "general")
        fake.add_member(guild.id, f"member{shard}")
        guilds.append(guild)
    return guilds[0], guilds[1]


async def where(fake: FakeDiscord, guild: FakeGuild) -> str:
    channel = next(iter(guild.channels))
    member = next(m for m in guild.members.values() if not m.user.bot and m.id != fake.owner.id)
    await fake.wait_for_commands("where")
    interaction = await fake.send_slash(guild.id, channel, member.id, "where")
    return (await fake.wait_for_reply(interaction)).text


def test_ids_land_on_the_shard_asked_for() -> None:
    for count in (1, 2, 3, 16):
        for shard in range(count):
            assert shard_of(snowflake_on_shard(shard, count), count) == shard
    with pytest.raises(ValueError, match="shard 2"):
        snowflake_on_shard(2, 2)


@pytest.mark.usefixtures("discord_endpoints")
async def test_auto_sharded_bot_opens_the_recommended_shards_and_hears_each_server_on_its_own() -> None:
    async with FakeDiscord(token=TOKEN, recommended_shards=2) as fake:
        first, second = two_servers(fake)
        bot = ShardBot("auto")
        async with running(fake, bot):
            await fake.wait_until_ready(shards=[0, 1])
            assert bot.shard_count == 2
            assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
            assert fake.connected_shards == [(0, 2), (1, 2)]
            assert fake.shards_hearing(first.id) == [0] and fake.shards_hearing(second.id) == [1]
            # Each shard was told about its own server only.
            assert sorted(fake.dispatched.count((s, "GUILD_CREATE")) for s in (0, 1)) == [1, 1]
            assert {g.id: g.shard_id for g in bot.guilds} == {first.id: 0, second.id: 1}

            before = len(fake.dispatched)
            assert await where(fake, second) == "auto shard 1"
            assert await where(fake, first) == "auto shard 0"
            interactions = [d for d in fake.dispatched[before:] if d[1] == "INTERACTION_CREATE"]
            assert interactions == [(1, "INTERACTION_CREATE"), (0, "INTERACTION_CREATE")]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{fake.api_base_url}/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as resp,
        ):
            assert (await resp.json())["shards"] == 2
        assert fake.protocol_errors == [] and fake.spec_violations == []


@pytest.mark.usefixtures("discord_endpoints")
async def test_two_processes_with_one_shard_each_answer_only_their_servers() -> None:
    async with FakeDiscord(token=TOKEN) as fake:
        first, second = two_servers(fake)
        zero = ShardBot("zero", shard_count=2, shard_ids=[0])
        one = ShardBot("one", shard_count=2, shard_ids=[1])
        async with running(fake, zero, one):
            await fake.wait_until_ready(shards=[0, 1])
            assert [g.id for g in zero.guilds] == [first.id]
            assert [g.id for g in one.guilds] == [second.id]
            assert await where(fake, first) == "zero shard 0"
            assert await where(fake, second) == "one shard 1"
            # A reaction is heard by the shard of its server only.
            posted = await fake.wait_for_message(lambda m: m.guild_id == second.id)
            before = len(fake.dispatched)
            member = next(m for m in second.members.values() if m.user.username == "member1")
            await fake.add_reaction(posted, "\N{THUMBS UP SIGN}", member.id)
            assert fake.dispatched[before:] == [(1, "MESSAGE_REACTION_ADD")]

            # A process gone: its servers' interactions fail as on Discord, the other's still work.
            await one.close()
            await fake.wait_for_disconnect(1)
            with pytest.raises(FakeDiscordError, match="no gateway connection holds the shard"):
                await where(fake, second)
            assert await where(fake, first) == "zero shard 0"
        assert fake.protocol_errors == [] and fake.spec_violations == []


@pytest.mark.usefixtures("discord_endpoints")
async def test_an_invalid_shard_is_refused_like_discord() -> None:
    async with FakeDiscord(token=TOKEN) as fake, aiohttp.ClientSession() as http:
        async with http.ws_connect(fake.gateway_url) as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 1, "shard": [2, 2]}})
            closed = await ws.receive()
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4010
        assert fake.connected_shards == []
        assert fake.protocol_errors == ["gateway: IDENTIFY with an invalid shard [2, 2]"]
