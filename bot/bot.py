"""The Discord client: loads cogs, drives the scheduler, routes errors, shuts down cleanly."""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from types import ModuleType
from typing import Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.errors import InvalidInputError, UserFacingError
from bot.handler_tasks import HandlerTasks
from bot.runtime import Runtime
from bot.services import Services
from bot.ui.delivery import PendingReplies
from bot.ui.errors import handle_interaction_error
from bot.ui.notifier import DiscordNotifier

log = logging.getLogger(__name__)
COGS_PACKAGE = "cogs"
MALFORMED_OPTION = (
    "One of the options has a value of the wrong kind (text where a number belongs?). "
    "Check the options and try again."
)
# `extras` key marking an application command that sends requests to the AI Horde.
CALLS_HORDE = "calls_horde"
CommandT = TypeVar("CommandT", app_commands.Command[Any, Any, Any], app_commands.ContextMenu)


def calls_horde(command: CommandT) -> CommandT:
    """Mark a command (put it above `@app_commands.command`) as calling the AI Horde: before it runs, the
    tree checks the member's safety cooldown, the bot-wide Horde pause and the per-member and per-guild
    rate limits (`SafetyService.gate`)."""
    command.extras[CALLS_HORDE] = True
    return command


class HordeTree(app_commands.CommandTree["HordeBot"]):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await handle_interaction_error(interaction, error)

    async def _call(self, interaction: discord.Interaction[HordeBot]) -> None:
        """discord.py reads the options before any check or error handler runs, and a value of the wrong
        kind (text in a number option: Discord's client never sends one, a hostile client can) raises out
        of that parsing unhandled. Answer it, rather than leave the member at "This interaction failed".
        Errors of the command itself arrive wrapped (`CommandInvokeError`) and go to `on_error` as usual."""
        try:
            await super()._call(interaction)
        except (ValueError, TypeError) as exc:
            if interaction.response.is_done():
                raise
            log.info("interaction %s: malformed option value (%s)", interaction.id, type(exc).__name__)
            await handle_interaction_error(interaction, InvalidInputError(MALFORMED_OPTION))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Safety gate for every command marked with `calls_horde` (autocomplete is not gated)."""
        if interaction.type is not discord.InteractionType.application_command:
            return True
        command = interaction.command
        if command is None or not command.extras.get(CALLS_HORDE):
            return True
        try:
            await self.client.services.safety.gate(user_id=interaction.user.id, guild_id=interaction.guild_id)
        except UserFacingError as exc:
            await handle_interaction_error(interaction, exc)
            return False
        return True


def discover_cogs(package: str = COGS_PACKAGE) -> list[str]:
    module = importlib.import_module(package)
    return sorted(
        f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__) if not info.ispkg
    )


class HordeBot(commands.Bot):
    def __init__(
        self, services: Services, runtime: Runtime, *, cogs: list[str] | None = None, **shard_options: Any
    ) -> None:
        intents = discord.Intents.default()
        # Privileged; only when enabled in config (automated roles then see joins and leaves).
        intents.members = services.roles.settings.members_intent
        super().__init__(
            # Slash commands only; no prefix commands, so no message content intent is needed.
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=HordeTree,
            # Nothing the bot sends may ping anyone: prompts and names are member-supplied text.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            **shard_options,
        )
        self.services = services
        # What the services were built from: the bot reads its own settings here (cogs never do).
        self.runtime = runtime
        self.settings = runtime.settings
        if isinstance(services.notifier, DiscordNotifier):
            services.notifier.client.plug(self)
        # The one registry of live interaction tokens (job replies, ratings being retried).
        self.replies = PendingReplies(services.clock, services.leases.takeover)
        self._cog_names = cogs
        self._features: dict[str, ModuleType] = {}
        self._ticker = tasks.loop(seconds=self.settings.scheduler.tick_seconds)(self._tick)
        # The handlers of members' events running now: `close` lets them finish before the database closes.
        self.handlers = HandlerTasks()
        self.handlers.watch(self._connection.parsers)
        self._loading: asyncio.Future[None] | None = None

    async def _tick(self) -> None:
        await self.services.scheduler.tick()

    async def setup_hook(self) -> None:
        # Opening the services and loading the cogs read and write the database (the cogs resume their
        # jobs). A stop asked meanwhile cancels the start-up (run.py), which cut such a query off mid-way
        # (SQLAlchemy logged the cancelled connection's reset as an error); the loading goes on to its end
        # instead, shielded, and `close` waits for it before closing the database.
        self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)
        if self.settings.discord.sync_on_start:
            await self.sync_commands()

    async def _load(self) -> None:
        await self.services.start()
        for name in self._cog_names if self._cog_names is not None else discover_cogs():
            await self.load_feature(name)
        self._ticker.start()

    # Cog modules are loaded as "features" rather than discord.py extensions: `load_extension` executes a
    # module's source afresh for every bot, rebuilding each command class and evaluating every option's
    # annotation again. The bot never reloads code while it runs, and a process that builds many bots (the
    # test suite builds one per test, ~0.1 s of CPU each) should not pay that every time; the module is
    # imported once per process and its `setup(bot)` run for each bot.

    @property
    def features(self) -> list[str]:
        """The cog modules loaded into this bot, in load order."""
        return list(self._features)

    async def load_feature(self, name: str) -> None:
        """Import the cog module `name` (once per process) and run its `setup(bot)`."""
        if name in self._features:
            raise RuntimeError(f"{name} is already loaded")
        module = importlib.import_module(name)
        setup = getattr(module, "setup", None)
        if setup is None:
            raise RuntimeError(f"{name} has no setup(bot) function")
        await setup(self)
        self._features[name] = module

    async def unload_feature(self, name: str) -> None:
        """Remove the cogs the module `name` added (each one's `cog_unload` runs)."""
        if self._features.pop(name, None) is None:
            raise RuntimeError(f"{name} is not loaded")
        for cog_name, cog in list(self.cogs.items()):
            if type(cog).__module__ == name:
                await self.remove_cog(cog_name)

    async def sync_commands(self, guild_id: int | None = None) -> int:
        """Sync the command tree: globally, or to one guild (instant, for development)."""
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
            for dev_guild in self.settings.discord.dev_guild_ids:
                self.tree.copy_global_to(guild=discord.Object(id=dev_guild))
                await self.tree.sync(guild=discord.Object(id=dev_guild))
        log.info("synced %d application commands%s", len(synced), f" to guild {guild_id}" if guild_id else "")
        return len(synced)

    async def is_owner(self, user: discord.abc.User) -> bool:
        owners = self.settings.discord.owner_ids
        if owners:
            return user.id in owners
        return await super().is_owner(user)

    async def close(self) -> None:
        """Stop in the order that loses nothing: members' events first (none is taken any more; those being
        handled finish, for up to `discord.shutdown_grace` seconds), then the bot's own background work and
        the database (`Services.close`), and the connection to Discord last (a handler's answer needs it)."""
        self.handlers.stop_taking()
        await self.handlers.finish(self.settings.discord.shutdown_grace)
        if self._loading is not None:
            # A start-up stopped while loading (see setup_hook): its error, if any, was the start's to raise.
            await asyncio.gather(self._loading, return_exceptions=True)
        self._ticker.cancel()
        try:
            await self.services.close()
        finally:
            if isinstance(self.services.notifier, DiscordNotifier):
                self.services.notifier.client.unplug(self)
            await super().close()


class ShardedHordeBot(HordeBot, commands.AutoShardedBot):
    """The bot as run: `discord.shard_count` shards in all, this process running `discord.shard_ids` (all of
    them when not set). Without a count discord.py asks Discord (`GET /gateway/bot`) how many shards the bot
    needs and runs them all here: one connection for a small bot, more once Discord requires them (above
    2,500 servers), with no setting to change. bot.shards says which servers' background work is this
    process's."""

    def __init__(self, services: Services, runtime: Runtime, *, cogs: list[str] | None = None) -> None:
        discord_settings = runtime.settings.discord
        super().__init__(
            services,
            runtime,
            cogs=cogs,
            shard_count=discord_settings.shard_count,
            shard_ids=list(discord_settings.shard_ids) or None,
        )
