"""The fake Discord, proven against a minimal discord.py bot running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from bot.services.jobs.replies import Reply
from bot.ui.delivery import reopened
from tests.fakes.discord_server import (
    TOKEN_LIFETIME,
    FakeChannel,
    FakeDiscord,
    FakeDiscordError,
    FakeGuild,
    FakeMember,
    Permissions,
)

TOKEN = "fake-bot-token"


class KeyModal(discord.ui.Modal, title="Log in"):
    key: discord.ui.TextInput[KeyModal] = discord.ui.TextInput(
        label="API key", custom_id="login:key", min_length=10, max_length=100
    )

    def __init__(self) -> None:
        super().__init__(custom_id="login:modal")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"linked key ending {self.key.value[-4:]}", ephemeral=True)


class LikeView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Like", custom_id="greet:like", style=discord.ButtonStyle.primary)
    async def like(self, interaction: discord.Interaction, button: discord.ui.Button[LikeView]) -> None:
        button.disabled = True
        await interaction.response.edit_message(content="liked!", view=self)


class MiniBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            guild_ready_timeout=0.05,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.reactions_seen: asyncio.Queue[str] = asyncio.Queue()
        self._register()

    def _register(self) -> None:
        @self.tree.command(name="work", description="Defer, then answer with a followup and a file")
        @app_commands.describe(prompt="What to do")
        async def work(interaction: discord.Interaction, prompt: str, steps: int = 10) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await asyncio.sleep(0.01)
            image = discord.File(io.BytesIO(b"\x89PNG fake"), filename="result.png")
            await interaction.followup.send(f"done: {prompt} ({steps} steps)", file=image, ephemeral=True)

        @self.tree.command(name="login", description="Open a modal")
        async def login(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(KeyModal())

        @self.tree.command(name="greet", description="Greet a member with a button")
        async def greet(interaction: discord.Interaction, member: discord.Member) -> None:
            embed = discord.Embed(title="Hello", description=f"hi {member.display_name}")
            await interaction.response.send_message(embed=embed, view=LikeView())

        @self.tree.command(name="post", description="Post in the channel and react")
        async def post(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("posting", ephemeral=True)
            assert isinstance(interaction.channel, discord.abc.Messageable)
            message = await interaction.channel.send("react to me")
            await message.add_reaction("\N{THUMBS UP SIGN}")

        @self.tree.command(name="dm", description="DM the caller")
        async def dm(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.user.send("a private hello")
            await interaction.followup.send("sent you a DM", ephemeral=True)

        @self.tree.command(name="shout", description="Break Discord's limits")
        async def shout(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("x" * 2001)

        @self.tree.command(name="slow", description="Acknowledge too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.4)
            await interaction.response.send_message("finally")

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.user_id != self.user.id if self.user else True:
            self.reactions_seen.put_nowait(str(payload.emoji))


@dataclass
class World:
    fake: FakeDiscord
    bot: MiniBot
    guild: FakeGuild
    channel: FakeChannel
    alice: FakeMember
    bob: FakeMember


@pytest.fixture
async def world() -> AsyncIterator[World]:
    fake = FakeDiscord(token=TOKEN)
    guild = fake.add_guild("Test Server")
    channel = fake.add_channel(guild.id, "general")
    alice = fake.add_member(guild.id, "alice")
    bob = fake.add_member(guild.id, "bob")
    await fake.start()
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    bot = MiniBot()
    runner = asyncio.create_task(bot.start(TOKEN))
    try:
        await fake.wait_until_ready()
        await fake.wait_for_commands("work", "login")
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        yield World(fake, bot, guild, channel, alice, bob)
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 5)
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
        await fake.stop()


def assert_clean(fake: FakeDiscord) -> None:
    assert fake.spec_violations == []
    assert fake.protocol_errors == []


async def test_startup_login_ready_and_command_sync(world: World) -> None:
    fake = world.fake
    assert world.bot.user is not None and world.bot.user.id == fake.application_id
    assert world.bot.application_id == fake.application_id
    assert fake.identify is not None and fake.identify["intents"] == discord.Intents.default().value
    assert "token" not in fake.identify
    guild = world.bot.get_guild(world.guild.id)
    assert guild is not None and guild.get_channel(world.channel.id) is not None
    names = {c["name"] for c in fake.commands().values()}
    assert {"work", "login", "greet", "post", "dm"} <= names
    paths = [(r.method, r.template) for r in fake.requests]
    assert ("GET", "/users/@me") in paths
    assert ("PUT", "/applications/{application_id}/commands") in paths
    assert_clean(fake)


async def test_slash_defer_then_followup_with_file(world: World) -> None:
    fake = world.fake
    inter = await fake.send_slash(
        world.guild.id, world.channel.id, world.alice.id, "work", {"prompt": "a cat"}
    )
    callback = await fake.wait_for_callback(inter)
    assert callback.type == 5 and callback.ephemeral
    reply = await fake.wait_for_reply(inter)
    assert reply.ephemeral and not reply.loading
    assert reply.content == "done: a cat (10 steps)"
    assert [(a.filename, a.data) for a in reply.attachments] == [("result.png", b"\x89PNG fake")]
    # The followup replaced the "thinking" placeholder, as on Discord.
    assert reply is inter.original and inter.messages == [reply]
    # The recorded multipart request carried payload_json (validated) and the file.
    followup = next(r for r in fake.requests if r.template == "/webhooks/{webhook_id}/{webhook_token}")
    assert followup.json["content"] == "done: a cat (10 steps)"
    async with aiohttp.ClientSession() as http, http.get(reply.attachments[0].url) as resp:
        assert await resp.read() == b"\x89PNG fake"
    assert_clean(fake)


async def test_modal_opened_and_submitted_with_ephemeral_answer(world: World) -> None:
    fake = world.fake
    inter = await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "login")
    submit = await fake.submit_modal(inter, {"login:key": "abcdef123456"})
    assert inter.callback is not None and inter.callback.modal is not None
    assert inter.callback.modal["custom_id"] == "login:modal"
    reply = await fake.wait_for_reply(submit)
    assert reply.ephemeral and reply.content == "linked key ending 3456"
    assert submit.user.id == world.alice.id
    # Values are checked like Discord's client would: too short can't be submitted.
    with pytest.raises(FakeDiscordError, match=r"10\.\.100"):
        await fake.submit_modal("login:modal", {"login:key": "short"})
    with pytest.raises(FakeDiscordError, match="no input"):
        await fake.submit_modal("login:modal", {"nope": "x" * 20})
    assert_clean(fake)


async def test_button_click_updates_the_message(world: World) -> None:
    fake = world.fake
    inter = await fake.send_slash(
        world.guild.id, world.channel.id, world.alice.id, "greet", {"member": world.bob.id}
    )
    message = await fake.wait_for_reply(inter)
    assert not message.ephemeral
    assert "hi Bob" in message.text and message.custom_ids() == ["greet:like"]
    click = await fake.click(message, "greet:like")
    callback = await fake.wait_for_callback(click)
    assert callback.type == 7
    assert message.content == "liked!"
    liked = message.find_component("greet:like")
    assert liked is not None and liked == {**liked, "disabled": True}
    assert message.history and message.history[0]["content"] == ""
    with pytest.raises(FakeDiscordError, match="disabled"):
        await fake.click(message, "greet:like")
    assert_clean(fake)


async def test_channel_message_reactions_both_ways(world: World) -> None:
    fake = world.fake
    await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "post")
    posted = await fake.wait_for_message(lambda m: m.content == "react to me")
    assert posted.interaction is None and not posted.ephemeral
    await fake.wait_for_request(lambda r: r.method == "PUT" and "/reactions/" in r.path)
    assert posted.reactions == {"\N{THUMBS UP SIGN}": [fake.application_id]}
    await fake.add_reaction(posted, "\N{HEAVY BLACK HEART}", world.bob.id)
    assert await asyncio.wait_for(world.bot.reactions_seen.get(), 5) == "\N{HEAVY BLACK HEART}"
    assert_clean(fake)


async def test_dm(world: World) -> None:
    fake = world.fake
    inter = await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "dm")
    assert (await fake.wait_for_reply(inter)).content == "sent you a DM"
    dm = fake.dm_channel(world.alice.id)
    assert [m.content for m in fake.messages_in(dm.id)] == ["a private hello"]
    assert_clean(fake)


async def test_spec_violations_are_recorded_and_rejected_like_discord(world: World) -> None:
    fake = world.fake
    inter = await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "shout")
    await fake.wait_for_request(lambda r: r.template is not None and r.template.endswith("/callback"))
    assert len(fake.spec_violations) == 1
    assert "body.data.content: string of 2001 characters" in fake.spec_violations[0]
    assert fake.requests[-1].status == 400 and inter.callback is None
    fake.spec_violations.clear()


async def test_late_acknowledgement_is_a_protocol_error(world: World) -> None:
    fake = world.fake
    fake.ack_timeout = 0.2
    inter = await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "slow")
    await fake.wait_for_request(lambda r: r.template is not None and r.template.endswith("/callback"))
    assert inter.callback is None
    assert len(fake.protocol_errors) == 1 and "too late" in fake.protocol_errors[0]
    fake.protocol_errors.clear()
    assert fake.spec_violations == []


async def test_rate_limits_are_retried_by_discord_py(world: World) -> None:
    fake = world.fake
    fake.inject_rate_limit("POST", "/channels/{channel_id}/messages", retry_after=0.05)
    await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "post")
    await fake.wait_for_message(lambda m: m.content == "react to me")
    statuses = [r.status for r in fake.requests if r.template == "/channels/{channel_id}/messages"]
    assert statuses == [429, 200]
    assert_clean(fake)


async def test_unsynced_commands_and_missing_permissions_fail_clearly(world: World) -> None:
    fake = world.fake
    with pytest.raises(FakeDiscordError, match=r"/imagine was never synced.*synced commands: \['dm'"):
        await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "imagine")
    with pytest.raises(FakeDiscordError, match="no option"):
        await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "work", {"promt": "typo"})
    with pytest.raises(FakeDiscordError, match="required"):
        await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "work", {})
    # Without SEND_MESSAGES the bot's channel post is refused with Discord's 403.
    world.guild.roles[next(r for r in world.guild.roles if world.guild.roles[r].managed)].permissions = 0
    world.guild.everyone.permissions = Permissions.VIEW_CHANNEL
    await fake.send_slash(world.guild.id, world.channel.id, world.alice.id, "post")
    forbidden = await fake.wait_for_request(lambda r: r.status == 403)
    assert forbidden.template == "/channels/{channel_id}/messages"
    assert any("Missing Permissions" in e for e in fake.protocol_errors)
    fake.protocol_errors.clear()


async def test_raw_http_contract(world: World) -> None:
    fake = world.fake
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{fake.api_base_url}/users/@me", headers={"Authorization": f"Bot {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["id"] == str(fake.application_id)
        async with http.get(f"{fake.api_base_url}/users/@me") as resp:
            assert resp.status == 401
        async with http.get(
            f"{fake.api_base_url}/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}
        ) as resp:
            assert (await resp.json())["url"] == fake.gateway_url
    assert any("401" in e for e in fake.protocol_errors)
    fake.protocol_errors.clear()
    assert fake.spec_violations == []


async def test_a_repeated_nonce_returns_the_first_message_like_discord(world: World) -> None:
    """Discord's message create with `enforce_nonce` (discord.py sends it with every nonce): the same
    author's second create with a nonce used in the past few minutes returns the first message and creates
    none; a deleted one answers 404 Unknown Message (discord.py's documented NotFound)."""
    fake, bot = world.fake, world.bot
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    first = await channel.send("the result", nonce="job-gen-1")
    again = await channel.send("the result, sent again by another process", nonce="job-gen-1")
    other = await channel.send("another job's result", nonce="job-gen-2")
    assert again.id == first.id and again.content == "the result" and other.id != first.id
    assert [m.content for m in fake.messages_in(world.channel.id)] == ["the result", "another job's result"]
    await other.delete()
    with pytest.raises(discord.NotFound):
        await channel.send("after its deletion", nonce="job-gen-2")
    assert [m.content for m in fake.messages_in(world.channel.id)] == ["the result"]
    assert_clean(fake)


async def test_the_original_response_is_read_and_edited_by_its_token_for_15_minutes(world: World) -> None:
    """Discord's GET/PATCH /webhooks/{application}/{token}/messages/@original: any holder of the token (here
    an interaction rebuilt from it, as a bot process that never saw the command does, and raw HTTP) reads
    and edits the original response while the token lives (15 minutes); then 401 Invalid Webhook Token."""
    fake, bot = world.fake, world.bot
    inter = await fake.send_slash(
        world.guild.id, world.channel.id, world.alice.id, "work", {"prompt": "a cat"}
    )
    reply = await fake.wait_for_reply(inter)
    reply_state = Reply(inter.token, datetime.now(UTC) + timedelta(minutes=14))
    rebuilt = reopened(bot, reply_state, channel_id=world.channel.id, guild_id=world.guild.id)
    assert rebuilt is not None
    original = await rebuilt.original_response()
    assert original.id == reply.id and original.content == "done: a cat (10 steps)"
    edited = await rebuilt.edit_original_response(content="the result, edited in")
    assert edited.id == reply.id and reply.content == "the result, edited in"
    hook = f"{fake.api_base_url}/webhooks/{fake.application_id}/{inter.token}/messages/@original"
    async with aiohttp.ClientSession() as http:
        async with http.get(hook) as resp:
            assert resp.status == 200 and (await resp.json())["content"] == "the result, edited in"
        async with http.patch(hook, json={"content": "edited by raw HTTP"}) as resp:
            assert resp.status == 200 and reply.content == "edited by raw HTTP"
        inter.dispatched_at -= TOKEN_LIFETIME + 1  # 15 minutes later
        async with http.get(hook) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 50027
        async with http.patch(hook, json={"content": "too late"}) as resp:
            assert resp.status == 401 and reply.content == "edited by raw HTTP"
    with pytest.raises(discord.HTTPException):
        await rebuilt.edit_original_response(content="too late")
    assert fake.spec_violations == []
    fake.protocol_errors.clear()
