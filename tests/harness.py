"""The project's own test API for driving the bot as Discord users do.

This module and `tests/support/simcord_adapter.py` (every call into simcord's private API) are the only ones
that import simcord (offline discord.py simulation), so the simulator can be swapped without touching the
tests. Tests arrange guilds and members, act (slash commands, modals,
buttons, reactions) and assert on `Reply` objects and on the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import discord
from sqlalchemy import event

from bot.app import create_bot
from bot.bot import HordeBot
from bot.config import Settings
from bot.runtime import Runtime
from bot.services import Services
from bot.ui.errors import render_error
from tests.support import simcord_adapter
from tests.support.clock import TestClock
from tests.support.sqlite_template import place_migrated_database

_MARKDOWN_ESCAPE = re.compile(r"\\([*_`~|>\\\[\]()#@-])")


@dataclass
class Reply:
    """What a member saw in answer to one interaction (the first response, plus followups).

    `deferred` is True when the bot's first answer was a defer ("thinking…"), whatever came after.
    """

    ephemeral: bool
    deferred: bool
    content: str
    embeds: list[discord.Embed]
    attachments: list[discord.Attachment]
    modal: dict[str, Any] | None
    followups: list[Reply] = field(default_factory=list)
    message: discord.Message | None = None
    raw: Any = None

    @property
    def text(self) -> str:
        """Content and every embed's visible text, flattened, with markdown escapes rendered: what a reader
        sees (`alice\\_alt` shows as `alice_alt`)."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.title or "", embed.description or "", embed.footer.text or ""]
            parts += [f"{f.name}: {f.value}" for f in embed.fields]
        for followup in self.followups:
            parts.append(followup.text)
        return _MARKDOWN_ESCAPE.sub(r"\1", "\n".join(p for p in parts if p))

    @property
    def private(self) -> bool:
        """Everything the member was shown is ephemeral (a deleted public placeholder shows nothing)."""
        shown = [self] if (self.content or self.embeds or self.attachments) else []
        shown += self.followups
        return bool(shown) and all(part.ephemeral for part in shown)

    def latest(self) -> Reply:
        """The same interaction's reply as it looks now: after the bot edited it or sent followups."""
        fresh = _to_reply(self.raw)
        fresh.deferred = self.deferred
        return fresh

    @property
    def modal_field_ids(self) -> list[str]:
        if not self.modal:
            return []
        return [c["custom_id"] for row in self.modal["components"] for c in row["components"]]


def _message_reply(message: Any, *, deferred: bool = False) -> Reply:
    return Reply(
        ephemeral=bool(getattr(message, "ephemeral", False)),
        deferred=deferred,
        content=message.content or "",
        embeds=list(message.embeds),
        attachments=list(message.attachments),
        modal=None,
        message=getattr(message, "message", None),
        raw=message,
    )


def _to_reply(result: Any) -> Reply:
    response = result.response
    followups = [_message_reply(f) for f in result.followups]
    if response is None:
        return Reply(
            ephemeral=bool(result.ephemeral),
            deferred=bool(result.deferred),
            content="",
            embeds=[],
            attachments=[],
            modal=result.modal,
            followups=followups,
            raw=result,
        )
    reply = _message_reply(response, deferred=bool(result.deferred))
    reply.ephemeral = bool(result.ephemeral) or reply.ephemeral
    reply.followups = followups
    reply.raw = result
    return reply


class Member:
    """A Discord member acting in the simulated guild."""

    def __init__(self, harness: Harness, actor: Any) -> None:
        self._h = harness
        self.actor = actor

    @property
    def id(self) -> int:
        return int(self.actor.id)

    @property
    def mention(self) -> str:
        return str(self.actor.mention)

    async def _interact(self, action: Any) -> Reply:
        start = len(self._h.env.http_requests)
        reply = _to_reply(await action)
        # The first interaction callback the bot sent for this action: type 5/6 is a defer.
        for request in self._h.env.http_requests[start:]:
            if request.path.endswith("/callback") and isinstance(request.json, dict):
                reply.deferred = reply.deferred or request.json.get("type") in (5, 6)
                break
        return reply

    async def slash(self, name: str, /, channel: Any = None, **options: Any) -> Reply:
        return await self._interact(self.actor.slash(channel or self._h.channel, name, **options))

    async def slash_options(self, name: str, /, options: dict[str, Any], channel: Any = None) -> Reply:
        """Like `slash`, for commands with an option that is itself called `channel`."""
        return await self._interact(self.actor.slash(channel or self._h.channel, name, **options))

    async def slash_raw(self, name: str, /, options: dict[str, Any], channel: Any = None) -> Reply:
        """A slash command as a hostile or buggy client sends it: option values go on the wire exactly as
        given, without the checks Discord's client makes (declared min/max, lengths, choices, types).

        Values are wire values (a number may be NaN, a string may hold NUL bytes or an unknown choice).
        A member, role or channel handle is resolved as Discord does; a bare id (int) is sent without a
        `resolved` entry, as when the payload doesn't resolve the user (discord.py then hands the bot a
        `discord.Object`). A `(filename, bytes)` tuple is uploaded as an attachment."""
        from simcord import actors as simcord_actors
        from simcord import interactions as simcord_interactions
        from simcord.enums import AppCommandType, InteractionType, OptionType

        env = self._h.env
        where = channel or self._h.channel
        parts = name.split()
        env._begin_operation("slash")
        try:
            root = simcord_actors._resolve_visible_command(
                self.actor, where.id, parts[0], AppCommandType.CHAT_INPUT
            )
            leaf, nesting = simcord_interactions.walk_to_subcommand(root, parts[1:])
            declared = {option["name"]: option for option in leaf.get("options") or []}
            built: list[dict[str, Any]] = []
            resolved: dict[str, Any] = {}
            for option_name, value in options.items():
                option_type = declared[option_name]["type"]
                if option_type == OptionType.ATTACHMENT and isinstance(value, tuple):
                    filename, content = value
                    value = simcord_interactions.store_interaction_attachment(
                        env.backend, where.id, filename, content, resolved
                    )
                elif hasattr(value, "id") and not isinstance(value, int):
                    simcord_interactions.resolve_handle(self.actor, value, resolved, channel_id=where.id)
                    value = str(value.id)
                elif isinstance(value, int) and option_type in (
                    OptionType.USER,
                    OptionType.ROLE,
                    OptionType.CHANNEL,
                    OptionType.MENTIONABLE,
                ):
                    value = str(value)
                built.append({"name": option_name, "type": option_type, "value": value})
            data: dict[str, Any] = {
                "id": root["id"],
                "name": root["name"],
                "type": root.get("type", AppCommandType.CHAT_INPUT),
                "options": simcord_interactions.nest_options(root, nesting, built),
            }
            if resolved:
                data["resolved"] = resolved
            if root.get("guild_id"):
                data["guild_id"] = root["guild_id"]
            action = simcord_actors._dispatch_actor_interaction(
                self.actor, InteractionType.APPLICATION_COMMAND, where, data
            )
            return await self._interact(action)
        finally:
            env._end_operation()

    async def submit_modal(self, shown: Reply, values: dict[str, str]) -> Reply:
        return await self._interact(self.actor.submit_modal(shown.raw, values))

    async def click(self, message: Any, *, label: str | None = None, custom_id: str | None = None) -> Reply:
        return await self._interact(self.actor.click(message, label=label, custom_id=custom_id))

    async def select(self, message: Any, custom_id: str, values: list[str]) -> Reply:
        return await self._interact(self.actor.select(message, custom_id=custom_id, values=values))

    async def context_menu(self, name: str, target: Any, channel: Any = None) -> Reply:
        return await self._interact(self.actor.context_menu(channel or self._h.channel, name, target))

    async def click_burst(
        self, message: Any, custom_ids: list[str], *, visible_only: bool = True
    ) -> list[Reply]:
        """Click several buttons (or one button several times) before the bot can answer any of them:
        every INTERACTION_CREATE is delivered first, then the bot runs them all at once, as happens when
        a member clicks ten times in a second.

        With `visible_only=False` the clicks are sent even on a message this member can't see (another
        member's ephemeral message): Discord itself refuses that, so it only proves the bot's own check.
        """
        env = self._h.env
        records = []
        with simcord_adapter.operation(env, "click_burst"):
            if visible_only:
                stored = simcord_adapter.visible_message(self.actor, message)
            else:
                channel_id = message.channel_id if hasattr(message, "channel_id") else message.channel.id
                stored = env.backend.get_message(channel_id, message.id)
            start = len(env.http_requests)
            for custom_id in custom_ids:
                button = simcord_adapter.find_button(stored, custom_id)
                records.append(simcord_adapter.emit_button_click(env, self.actor, stored, button))
            await simcord_adapter.settle_after(env, "INTERACTION_CREATE")
        replies = [_to_reply(simcord_adapter.interaction_result(env, record)) for record in records]
        acked = {
            request.path.split("/")[2]: request.json.get("type")
            for request in env.http_requests[start:]
            if request.path.endswith("/callback") and isinstance(request.json, dict)
        }
        for reply, record in zip(replies, records, strict=True):
            reply.deferred = reply.deferred or acked.get(str(record.id)) in (5, 6)
        return replies

    async def react(self, message: Any, emoji: str) -> None:
        await self.actor.react(message, emoji)

    async def unreact(self, message: Any, emoji: str) -> None:
        await self.actor.unreact(message, emoji)

    async def autocomplete(
        self, command: str, option: str, value: str, channel: Any = None, **others: Any
    ) -> list[dict[str, Any]]:
        result = await self.actor.autocomplete(channel or self._h.channel, command, option, value, **others)
        # simcord returns the offered choices as a list (older versions: a result object).
        if isinstance(result, list):
            return list(result)
        return list(result.autocomplete_choices or [])

    async def send(self, content: str, channel: Any = None, **kwargs: Any) -> discord.Message:
        message: discord.Message = await self.actor.send(channel or self._h.channel, content, **kwargs)
        return message


class Harness:
    def __init__(self, env: Any, bot: HordeBot, settings: Settings, clock: TestClock) -> None:
        self.env = env
        self.bot = bot
        self.settings = settings
        self.clock = clock
        # Secrets a test has checked were shown only to their owner, ephemerally (e.g. a shared key just
        # created): the fixture's "no key ever sent to Discord" check skips these and only these.
        self.shown_to_owner: set[str] = set()
        self._error_cursor = 0
        self.guild = env.create_guild(name="Horde Fans")
        self.channel = self.guild.create_text_channel("general")

    @property
    def services(self) -> Services:
        return self.bot.services

    @property
    def runtime(self) -> Runtime:
        """What the bot's services were built from: the database a test reads to check what was stored."""
        return self.bot.runtime

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """Every SQL statement the bot's database runs meanwhile, as sent (read off its engine)."""
        seen: list[str] = []

        def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        engine = self.runtime.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", note)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", note)

    def member(self, name: str, **kwargs: Any) -> Member:
        return Member(self, self.guild.add_member(self.env.create_user(name), **kwargs))

    def text_channel(self, name: str, **kwargs: Any) -> Any:
        return self.guild.create_text_channel(name, **kwargs)

    def bot_role(self) -> Any:
        """The bot's own (managed, integration) role: its highest role."""
        me = self.guild.me
        assert me is not None
        return self.guild.roles[me.top_role.name]

    def role_above_bot(self, name: str, **kwargs: Any) -> Any:
        """A role placed above the bot's highest role (the bot can't grant it)."""
        me = self.guild.me
        assert me is not None
        return self.guild.create_role(name, position=me.top_role.position + 1, **kwargs)

    async def set_role_permissions(self, role: Any, permissions: discord.Permissions) -> None:
        """Change a role's guild-wide permissions (e.g. take Manage Roles from the bot's role)."""
        self.env.backend.edit_role(self.guild.id, role.id, {"permissions": permissions.value})
        await self.env.settle()

    async def set_channel_overwrite(
        self, channel: Any, role: Any, overwrite: discord.PermissionOverwrite
    ) -> None:
        """Replace a role's permission overwrite on a channel (e.g. stop the bot's role from posting)."""
        from simcord.backend.models import Overwrite
        from simcord.enums import OverwriteType

        allow, deny = overwrite.pair()
        stored = self.env.backend.get_channel(channel.id)
        kept = [o for o in stored.overwrites if o.target_id != role.id]
        new = Overwrite(target_id=role.id, type=OverwriteType.ROLE, allow=allow.value, deny=deny.value)
        self.env.backend.edit_channel(channel.id, {}, overwrites=[*kept, new])
        await self.env.settle()

    async def delete_channel(self, channel: Any) -> None:
        """Delete a channel, as a server admin would; the bot gets CHANNEL_DELETE."""
        self.env.backend.delete_channel(channel.id)
        await self.env.settle()

    async def advance(self, seconds: float) -> None:
        """Move virtual time: scheduler ticks, sleeps and view timeouts fire."""
        await self.env.advance_time(seconds)

    async def settle(self) -> None:
        await self.env.settle()

    async def restart(self) -> HordeBot:
        """Simulate a crash and restart: all bot tasks die, a new bot is built from the same settings
        and database, and reconnects."""
        old = self.bot
        simcord_adapter.clear_stalls(self.env)  # the calls the old process waited on die with it
        new = create_bot(self.settings, clock=self.clock)
        await self.env.restart_bot(new)
        # The old process is gone; release what it held without a graceful shutdown.
        await old.runtime.http.aclose()
        await old.runtime.db.close()
        self.bot = new
        await new.tree.sync()
        return new

    def take_errors(self) -> list[BaseException]:
        """Errors that reached the bot's error handler so far; taking them means the test expected them."""
        errors = list(self.env.errors_since(self._error_cursor))
        self._error_cursor = self.env.error_cursor
        return errors

    def time_context(self) -> Any:
        """Select the simulator's virtual clock for code running in the test itself."""
        return self.env.time_context()

    def channel_messages(self, channel: Any = None) -> list[discord.Message]:
        """The channel's (or thread's) public messages, oldest first: what everyone sees."""
        return list((channel or self.channel).history())

    def pings(self, message: discord.Message) -> tuple[list[int], list[int], bool]:
        """Whom a posted message really pinged: (user ids, role ids, @everyone/@here), as Discord decides it
        from the content, the message's allowed mentions and the author's permissions."""
        stored = self.env.backend.get_message(message.channel.id, message.id)
        return list(stored.ping_user_ids), list(stored.ping_role_ids), bool(stored.mention_everyone)

    def rest_requests(self) -> list[Any]:
        return list(self.env.http_requests)

    def requests_containing(self, secret: str) -> list[Any]:
        """Every REST request to Discord whose JSON body contains `secret`."""
        return [
            r
            for r in self.env.http_requests
            if r.json is not None and secret in json.dumps(r.json, default=str)
        ]

    def sent_text(self) -> str:
        """Every JSON body the bot sent to Discord, as one string (for 'never shown' checks)."""
        return "\n".join(
            json.dumps(r.json, default=str) for r in self.env.http_requests if r.json is not None
        )

    def discord_stalls(self, method: str, path: str) -> None:
        """Make matching webhook calls (fnmatch `path`, e.g. "/webhooks/*/messages/@original") wait
        unanswered until the next `restart`: the process is killed right before Discord gets them."""
        simcord_adapter.stall(self.env, method, path)

    def discord_rate_limits(self, method: str, path: str, *, times: int | None = 1) -> None:
        """Make matching REST calls (fnmatch `path`, e.g. "/webhooks/*/messages/@original") fail with a
        Discord 429, as discord.py reports one it does not retry (a Cloudflare limit, or a retry_after over
        its cap): an `HTTPException` with status 429 reaches the bot."""
        self.env.inject_error(
            method, path, status=429, code=0, message="You are being rate limited.", times=times
        )


def row_items(message: discord.Message) -> list[Any]:
    """Every component inside a message's action rows (buttons, select menus), in order."""
    return [item for row in message.components if isinstance(row, discord.ActionRow) for item in row.children]


def assert_fits_discord_spec(harness: Harness) -> None:
    """Every REST request the bot sent must fit Discord's OpenAPI spec (issue #2), as the `harness`
    fixture checks; `run_harness` (tests with their own settings) checks it too."""
    from tests.support.discord_spec import get_spec_validator

    validator = get_spec_validator()
    violations = [
        problem
        for request in harness.rest_requests()
        for problem in validator.validate(request.method, request.path, request.json, request.params)
    ]
    assert not violations, "requests that break Discord's API schema:\n" + "\n".join(violations)


async def start_harness(settings: Settings, **simcord_options: Any) -> Harness:
    """Build the bot from `settings`, connect it to a fresh simulated Discord and sync its commands."""
    await place_migrated_database(settings.database.url)
    clock = TestClock.following_loop()
    bot = create_bot(settings, clock=clock)
    if isinstance(bot, discord.AutoShardedClient) and bot.shard_count is None:
        # Without sharding settings the bot asks Discord how many shards to run; simcord has no
        # GET /gateway/bot, so say what Discord recommends for a bot in a few servers: one.
        simcord_options.setdefault("shard_count", 1)
    # Real I/O (SQLite, the fake Horde's thread) takes longer on a loaded CI machine than simcord's 5 s
    # default allows; settling still returns as soon as the bot is idle, so passing tests are not slower.
    simcord_options.setdefault("settle_timeout", 30.0)
    env = simcord_adapter.HarnessEnv(bot, **simcord_options)
    await env.start()
    await bot.tree.sync()
    return Harness(env, bot, settings, clock)


async def stop_harness(harness: Harness) -> None:
    """Disconnect, release the bot's resources, and fail on unexpected errors.

    Errors the bot turned into a message for the member (`render_error` knows them) are its normal
    behaviour; anything else reaching the error handler is a bug and fails the test.
    """
    try:
        await harness.env.shutdown()
    finally:
        await harness.bot.services.close()
    unexpected = [error for error in harness.take_errors() if render_error(error) is None]
    if unexpected:
        raise BaseExceptionGroup("the bot raised unexpected errors during the test", unexpected)


@asynccontextmanager
async def run_harness(settings: Settings, **simcord_options: Any) -> AsyncIterator[Harness]:
    """For tests that need their own settings; runs entirely inside the test's context."""
    harness = await start_harness(settings, **simcord_options)
    try:
        with harness.env.time_context():
            yield harness
        assert_fits_discord_spec(harness)
    finally:
        await stop_harness(harness)


# --- raw gateway events and virtual time (kudos, issue #5) ------------------------------------------------


def virtual_seconds(harness: Harness) -> float:
    """The simulator's virtual time in seconds (share it with the fake Horde: `horde.clock = ...`)."""
    return float(harness.env.backend.clock.elapsed)


async def deliver_reactions(
    harness: Harness, reactions: list[tuple[Member, int, int, str]], *, settle: bool = True
) -> None:
    """Deliver MESSAGE_REACTION_ADD gateway events exactly as given: `(member, channel id, message id,
    emoji)`. Unlike `Member.react`, nothing is checked or stored, so a test can deliver the same event twice
    (Discord does, after a resume), a reaction on a deleted message, or a burst of events before the bot
    handles any of them."""
    env = harness.env
    with simcord_adapter.operation(env, "deliver_reactions"):
        simcord_adapter.emit_reactions(
            env,
            harness.guild.id,
            [(member.id, channel, message, emoji) for member, channel, message, emoji in reactions],
        )
        if settle:
            await simcord_adapter.settle_after(env, "MESSAGE_REACTION_ADD")


async def run_as_bot(harness: Harness, coro: Any) -> Any:
    """Run `coro` as the bot's own work (its clock, its tracked tasks), as when another feature of the bot
    calls a service: e.g. the generation feature publishing `GenerationCompleted` to the party service. Time
    moves as the work waits on timers (virtually, without waiting in real time)."""
    task = simcord_adapter.start_as_bot_work(harness.env, coro)
    await simcord_adapter.finish_bot_work(harness.env, task)
    return await task
