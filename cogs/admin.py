"""/config: a server's settings, for members with the Manage Server permission. Every reply is ephemeral.

The cog only turns Discord objects into facts (`ChannelFacts`, `RoleFacts`), calls `AdminService`, and
renders; the rules live in `bot.services.admin`.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Literal, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot
from bot.errors import InvalidInputError, PermissionDeniedError
from bot.services.admin import (
    MAX_CUSTOM_TERM_LENGTH,
    AdminService,
    ChannelFacts,
    ImportPlan,
    RoleFacts,
    channel_problem,
)
from bot.services.guild_config import MAX_COOLDOWN_SECONDS, MAX_KUDOS_THRESHOLD, GuildConfig
from bot.services.info import HordeError
from bot.services.limits import (
    MAX_N,
    MAX_NAME_CHARS,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_STEPS,
    MIN_N,
    MIN_PIXELS,
    MIN_SIDE,
    MIN_STEPS,
)
from bot.ui.base import BaseView
from bot.ui.embeds import HORDE_COLOUR
from bot.ui.errors import send_ephemeral
from bot.ui.options import declare_range
from bot.ui.text import escape_user_text

log = logging.getLogger(__name__)

# The limits each option declares (Discord's client enforces them; the service checks them again).
Steps = app_commands.Range[int, MIN_STEPS, MAX_STEPS]
Side = app_commands.Range[int, MIN_SIDE, MAX_SIDE]
Threshold = app_commands.Range[int, 0, MAX_KUDOS_THRESHOLD]
EmojiText = app_commands.Range[str, 1, 100]  # a custom emoji is `<a:name:id>`, at most ~60 characters
Term = app_commands.Range[str, 1, MAX_CUSTOM_TERM_LENGTH]

MANAGE_SERVER = "Only members with the **Manage Server** permission can change this server's settings."
DEFAULT_HINT = "Leave the value out to go back to the bot's default."
IMPORT_BUTTON_IDS = ("config:import", "config:import-cancel")
STALE_IMPORT = (
    "This import is no longer pending (it expired or the bot restarted), so nothing was changed. "
    "Run `/config import` again with the file."
)


class ManageServerRequired(app_commands.CheckFailure, PermissionDeniedError):
    """Raised by the cog's check: a check failure for discord.py, a user-facing message for the handler."""

    def __init__(self) -> None:
        PermissionDeniedError.__init__(self, MANAGE_SERVER)


def _admin(interaction: discord.Interaction) -> AdminService:
    return cast(HordeBot, interaction.client).services.admin


def _guild(interaction: discord.Interaction) -> discord.Guild:
    if interaction.guild is None:
        raise PermissionDeniedError("This command only works in a server.")
    return interaction.guild


# --- facts about channels and roles -----------------------------------------------------------------


def channel_facts(guild: discord.Guild, channel_id: int) -> ChannelFacts:
    channel = guild.get_channel_or_thread(channel_id)
    if channel is None:
        return ChannelFacts(channel_id, None)
    perms = channel.permissions_for(guild.me)
    return ChannelFacts(
        channel_id,
        channel.name,
        text=isinstance(channel, (discord.TextChannel, discord.Thread, discord.VoiceChannel)),
        can_view=perms.view_channel,
        can_send=perms.send_messages_in_threads
        if isinstance(channel, discord.Thread)
        else perms.send_messages,
        can_embed=perms.embed_links,
    )


def role_facts(guild: discord.Guild, role_id: int) -> RoleFacts:
    role = guild.get_role(role_id)
    if role is None:
        return RoleFacts(role_id, None)
    me = guild.me
    return RoleFacts(
        role_id,
        role.name,
        is_default=role.is_default(),
        managed=role.managed,
        below_bot=role < me.top_role,
        bot_can_manage_roles=me.guild_permissions.manage_roles,
    )


# --- rendering --------------------------------------------------------------------------------------


def _channel_text(guild: discord.Guild, channel_id: int | None, unset: str) -> str:
    if channel_id is None:
        return unset
    problem = channel_problem(channel_facts(guild, channel_id))
    if problem is None:
        return f"<#{channel_id}>"
    if guild.get_channel_or_thread(channel_id) is None:
        return f"`{channel_id}` ⚠️ deleted"
    return f"<#{channel_id}> ⚠️ I can't post there"


def _role_text(guild: discord.Guild, role_id: int | None) -> str:
    if role_id is None:
        return "none"
    return f"<@&{role_id}>" if guild.get_role(role_id) is not None else f"`{role_id}` ⚠️ deleted"


def _clip(lines: list[str], limit: int = 1000) -> str:
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > limit - 20:
            out.append(f"… and {len(lines) - i} more")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def config_embed(config: GuildConfig, guild: discord.Guild, title: str) -> discord.Embed:
    embed = discord.Embed(title=title, colour=HORDE_COLOUR)
    channels = [_channel_text(guild, c, "") for c in config.generation_channels]
    embed.add_field(
        name="Generation channels", value=_clip(channels) if channels else "every channel", inline=False
    )
    nsfw = "never" if config.nsfw_policy == "off" else "only in age-restricted (NSFW) channels"
    embed.add_field(name="NSFW", value=nsfw, inline=True)
    embed.add_field(
        name="Anonymous generation",
        value="allowed" if config.allow_anonymous else "linked accounts only",
        inline=True,
    )
    embed.add_field(
        name="Default model",
        value=escape_user_text(config.default_model, 200) if config.default_model else "bot default",
        inline=True,
    )
    embed.add_field(
        name="Steps",
        value=_pair(config.default_steps, config.max_steps, str(config.default_steps), str(config.max_steps)),
        inline=True,
    )
    size = f"{config.default_width}×{config.default_height}"
    max_pixels = f"{config.max_pixels:,}" if config.max_pixels is not None else ""
    embed.add_field(
        name="Size",
        value=_pair(config.default_width, config.max_pixels, size, f"{max_pixels} pixels"),
        inline=True,
    )
    embed.add_field(name="Max images per request", value=_or_default(config.max_n), inline=True)
    cooldown = f"{config.cooldown_seconds} s" if config.cooldown_seconds is not None else "bot default"
    embed.add_field(name="Cooldown per member", value=cooldown, inline=True)
    embed.add_field(
        name="Alchemy NSFW check", value="on" if config.alchemy_nsfw_check else "off", inline=True
    )
    embed.add_field(
        name="Log channel", value=_channel_text(guild, config.log_channel_id, "none"), inline=True
    )
    embed.add_field(
        name="Kudos log channel",
        value=_channel_text(guild, config.kudos_log_channel_id, "same as the log channel"),
        inline=True,
    )
    emojis = AdminService.kudos_emoji_lines(config)
    embed.add_field(name="Kudos emojis", value=_clip(emojis) if emojis else "none", inline=False)
    words = [_code(w, 100) for w in config.blocked_words]
    embed.add_field(
        name=f"Blocked words ({len(words)}, plus the built-in rules)",
        value=_clip(words) if words else "none (the built-in rules always apply)",
        inline=False,
    )
    worker = _role_text(guild, config.worker_role_id)
    if config.worker_role_id is not None and config.worker_online_only:
        worker += " (workers online in the last day)"
    roles = [
        f"Linked: {_role_text(guild, config.linked_role_id)}",
        f"Worker owner: {worker}",
        f"Trusted: {_role_text(guild, config.trusted_role_id)}",
    ]
    embed.add_field(name="Roles", value="\n".join(roles), inline=False)
    tiers = [f"{t.threshold:,} kudos → {_role_text(guild, t.role_id)}" for t in config.kudos_tiers]
    embed.add_field(name="Kudos tiers", value=_clip(tiers) if tiers else "none", inline=False)
    return embed


def _code(text: str, limit: int = 200) -> str:
    """Member text as an inline code span: shown literally, so no markdown escaping inside."""
    shown = text[:limit].replace("`", "ˋ") or " "
    return f"`{shown}`"


def _pair(default: int | None, most: int | None, default_text: str, most_text: str) -> str:
    if default is None and most is None:
        return "bot defaults"
    shown_default = default_text if default is not None else "bot default"
    shown_most = most_text if most is not None else "bot default"
    return f"default {shown_default} · max {shown_most}"


def _or_default(value: int | None) -> str:
    return str(value) if value is not None else "bot default"


async def _done(interaction: discord.Interaction, text: str, **kwargs: Any) -> None:
    await interaction.followup.send(text, ephemeral=True, **kwargs)


async def _defer(interaction: discord.Interaction) -> discord.Guild:
    guild = _guild(interaction)
    await interaction.response.defer(ephemeral=True, thinking=True)
    return guild


def _check_plan(guild: discord.Guild, plan: ImportPlan) -> None:
    channels = {cid: channel_facts(guild, cid) for ids in plan.channel_ids.values() for cid in ids}
    roles = {rid: role_facts(guild, rid) for ids in plan.role_ids.values() for rid in ids}
    AdminService.check_references(plan, channels, roles)


class ImportConfirmView(BaseView):
    """Held in memory only (the checked file is not stored): after a restart or once it expired, its
    buttons are answered by `AdminCog.on_interaction` with `STALE_IMPORT`."""

    def __init__(
        self, admin: AdminService, plan: ImportPlan, owner_id: int, pending: set[int] | None = None
    ) -> None:
        super().__init__(owner_id=owner_id, timeout=admin.settings.confirm_timeout)
        self._admin = admin
        self._plan = plan
        self.message: discord.WebhookMessage | None = None
        # Message ids of the import confirmations this process is waiting on (shared with the cog).
        self._pending = pending if pending is not None else set()

    def stop(self) -> None:
        if self.message is not None:
            self._pending.discard(self.message.id)
        super().stop()

    async def on_timeout(self) -> None:
        if self.message is None:
            return
        self._pending.discard(self.message.id)
        try:
            await self.message.edit(content="The import expired; nothing changed.", embed=None, view=None)
        except discord.HTTPException:
            log.info("could not mark an expired /config import")

    @discord.ui.button(
        label="Replace the settings", style=discord.ButtonStyle.danger, custom_id="config:import"
    )
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[ImportConfirmView]
    ) -> None:
        guild = _guild(interaction)
        if not interaction.permissions.manage_guild:
            raise ManageServerRequired()
        # The server may have changed since the file was checked: check its channels and roles again.
        _check_plan(guild, self._plan)
        await self._admin.apply_import(guild.id, self._plan)
        self.stop()
        await interaction.response.edit_message(
            content="Imported: this server's settings were replaced. `/config show` shows them.",
            embed=None,
            view=None,
        )

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id="config:import-cancel")
    async def cancel(
        self, interaction: discord.Interaction, button: discord.ui.Button[ImportConfirmView]
    ) -> None:
        self.stop()
        await interaction.response.edit_message(
            content="Import cancelled; nothing changed.", embed=None, view=None
        )


class AdminCog(commands.Cog):
    config = app_commands.Group(
        name="config",
        description="This server's settings for the bot (Manage Server only)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    channels = app_commands.Group(
        name="channels", description="Where members may generate (empty list: everywhere)", parent=config
    )
    generation = app_commands.Group(name="generation", description="Generation rules", parent=config)
    logs = app_commands.Group(name="logs", description="Where the bot reports events", parent=config)
    kudos_emoji = app_commands.Group(
        name="kudos-emoji", description="Emojis that give kudos when members react with them", parent=config
    )
    blocked_words = app_commands.Group(
        name="blocked-words", description="This server's own blocked prompt terms", parent=config
    )
    roles = app_commands.Group(name="roles", description="Roles the bot grants automatically", parent=config)

    def __init__(self, bot: HordeBot) -> None:
        self.admin: AdminService = bot.services.admin
        self._pending_imports: set[int] = set()
        declare_range(
            self, "config kudos-emoji add", "amount", max_value=self.admin.settings.max_kudos_emoji_amount
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A click on an import confirmation this process no longer holds (bot restarted, or expired):
        answer it rather than leave Discord showing "This interaction failed"."""
        if interaction.type is not discord.InteractionType.component:
            return
        data = cast(dict[str, Any], interaction.data or {})
        if data.get("custom_id") not in IMPORT_BUTTON_IDS:
            return
        message = interaction.message
        if message is not None and message.id in self._pending_imports:
            return  # the live view answers it
        await send_ephemeral(interaction, STALE_IMPORT)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Discord hides /config from members without Manage Server, but a server can override that per
        role or member: the permission itself is checked here, on every use."""
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage()
        if not interaction.permissions.manage_guild:
            raise ManageServerRequired()
        return True

    # --- show / export / import ----------------------------------------------------------------------

    @config.command(name="show", description="Show every setting of this server")
    async def show(self, interaction: discord.Interaction) -> None:
        guild = await _defer(interaction)
        current = await self.admin.get(guild.id)
        await interaction.followup.send(
            embed=config_embed(current, guild, f"Settings for {escape_user_text(guild.name, 100)}"),
            ephemeral=True,
        )

    @config.command(name="export", description="Download this server's settings as a JSON file")
    async def export(self, interaction: discord.Interaction) -> None:
        guild = await _defer(interaction)
        data = await self.admin.export(guild.id)
        file = discord.File(io.BytesIO(data), filename=f"hordebot-config-{guild.id}.json")
        await _done(
            interaction,
            "This server's settings. `/config import` loads them here or in another server "
            "(channels and roles must exist there).",
            file=file,
        )

    @config.command(
        name="import", description="Replace this server's settings with a file from /config export"
    )
    @app_commands.describe(file="A JSON file made by /config export")
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        guild = await _defer(interaction)
        limit = self.admin.settings.max_import_bytes
        if file.size > limit:
            raise InvalidInputError(f"The file is too large: at most {limit:,} bytes. Nothing was changed.")
        plan = self.admin.plan_import(await file.read())
        _check_plan(guild, plan)
        view = ImportConfirmView(self.admin, plan, interaction.user.id, self._pending_imports)
        view.message = await interaction.followup.send(
            "The file is valid. Replace **all** of this server's settings with these?",
            embed=config_embed(plan.config, guild, "Settings in the file"),
            view=view,
            ephemeral=True,
            wait=True,
        )
        self._pending_imports.add(view.message.id)

    # --- generation channels -------------------------------------------------------------------------

    @channels.command(name="add", description="Allow generation in a channel")
    async def channels_add(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        guild = await _defer(interaction)
        updated = await self.admin.add_generation_channel(guild.id, channel_facts(guild, channel.id))
        await _done(
            interaction,
            f"Members can now generate in <#{channel.id}> "
            f"({len(updated.generation_channels)} channel(s) allowed; everywhere else is off).",
        )

    @channels.command(name="remove", description="Stop allowing generation in a channel")
    async def channels_remove(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        guild = await _defer(interaction)
        updated = await self.admin.remove_generation_channel(guild.id, channel.id)
        rest = "every channel" if not updated.generation_channels else "the remaining listed channels"
        await _done(interaction, f"Removed <#{channel.id}>. Generation is allowed in {rest}.")

    @channels.command(name="clear", description="Allow generation in every channel again")
    async def channels_clear(self, interaction: discord.Interaction) -> None:
        guild = await _defer(interaction)
        await self.admin.clear_generation_channels(guild.id)
        await _done(interaction, "The channel list is empty: members can generate in every channel.")

    # --- generation rules ----------------------------------------------------------------------------

    @generation.command(name="nsfw", description="Where NSFW generations are allowed")
    @app_commands.describe(policy="off: never; nsfw_channels: only in age-restricted channels")
    async def nsfw(self, interaction: discord.Interaction, policy: Literal["off", "nsfw_channels"]) -> None:
        guild = await _defer(interaction)
        await self.admin.set_nsfw_policy(guild.id, policy)
        text = (
            "NSFW is off everywhere."
            if policy == "off"
            else "NSFW is allowed only in age-restricted channels."
        )
        await _done(interaction, text)

    @generation.command(name="anonymous", description="Whether members without a linked account may generate")
    async def anonymous(self, interaction: discord.Interaction, allowed: bool) -> None:
        guild = await _defer(interaction)
        await self.admin.set_allow_anonymous(guild.id, allowed)
        text = (
            "Members without a linked account may generate (anonymously, or with the server's shared key)."
            if allowed
            else "Only members with a linked AI Horde account (or the server's shared key) may generate."
        )
        await _done(interaction, text)

    @generation.command(name="model", description="The default image model")
    @app_commands.describe(name=f"An image model served on the AI Horde. {DEFAULT_HINT}")
    async def model(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None
    ) -> None:
        guild = await _defer(interaction)
        updated = await self.admin.set_default_model(guild.id, name)
        if updated.default_model is None:
            await _done(interaction, "The default model is back to the bot's default.")
        else:
            await _done(
                interaction, f"The default model is now **{escape_user_text(updated.default_model, 200)}**."
            )

    @model.autocomplete("name")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            models = await cast(HordeBot, interaction.client).services.info.models("image", current)
        except HordeError:
            return []
        return [app_commands.Choice(name=m.name[:100], value=m.name[:100]) for m in models[:25]]

    @generation.command(name="default-steps", description="Steps used when a member doesn't choose")
    @app_commands.describe(steps=f"1-500. {DEFAULT_HINT}")
    async def default_steps(self, interaction: discord.Interaction, steps: Steps | None = None) -> None:
        guild = await _defer(interaction)
        await self.admin.set_default_steps(guild.id, steps)
        await _done(interaction, f"Default steps: **{_or_default(steps)}**.")

    @generation.command(name="max-steps", description="The most steps a member may ask for")
    @app_commands.describe(steps=f"1-500. {DEFAULT_HINT}")
    async def max_steps(self, interaction: discord.Interaction, steps: Steps | None = None) -> None:
        guild = await _defer(interaction)
        await self.admin.set_max_steps(guild.id, steps)
        await _done(interaction, f"Maximum steps: **{_or_default(steps)}**.")

    @generation.command(name="size", description="The default image size")
    @app_commands.describe(
        width=f"64-3072, a multiple of 64. {DEFAULT_HINT}", height="64-3072, a multiple of 64"
    )
    async def size(
        self, interaction: discord.Interaction, width: Side | None = None, height: Side | None = None
    ) -> None:
        guild = await _defer(interaction)
        await self.admin.set_default_size(guild.id, width, height)
        shown = f"{width}×{height}" if width is not None else "the bot's default"
        await _done(interaction, f"Default size: **{shown}**.")

    @generation.command(
        name="max-pixels", description="The largest image (width × height) a member may ask for"
    )
    @app_commands.describe(pixels=f"4,096-9,437,184. {DEFAULT_HINT}")
    async def max_pixels(
        self,
        interaction: discord.Interaction,
        pixels: app_commands.Range[int, MIN_PIXELS, MAX_PIXELS] | None = None,
    ) -> None:
        guild = await _defer(interaction)
        await self.admin.set_max_pixels(guild.id, pixels)
        await _done(
            interaction, f"Maximum pixels: **{f'{pixels:,}' if pixels is not None else 'bot default'}**."
        )

    @generation.command(name="max-n", description="The most images one request may make")
    @app_commands.describe(n=f"1-20. {DEFAULT_HINT}")
    async def max_n(
        self, interaction: discord.Interaction, n: app_commands.Range[int, MIN_N, MAX_N] | None = None
    ) -> None:
        guild = await _defer(interaction)
        await self.admin.set_max_n(guild.id, n)
        await _done(interaction, f"Maximum images per request: **{_or_default(n)}**.")

    @generation.command(name="cooldown", description="Seconds a member waits between two generations")
    @app_commands.describe(seconds=f"0-3600 (0: no cooldown). {DEFAULT_HINT}")
    async def cooldown(
        self,
        interaction: discord.Interaction,
        seconds: app_commands.Range[int, 0, MAX_COOLDOWN_SECONDS] | None = None,
    ) -> None:
        guild = await _defer(interaction)
        await self.admin.set_cooldown(guild.id, seconds)
        await _done(
            interaction,
            f"Cooldown per member: **{f'{seconds} s' if seconds is not None else 'bot default'}**.",
        )

    @generation.command(
        name="alchemy-nsfw-check", description="Check uploaded images for NSFW before alchemy"
    )
    async def alchemy_nsfw_check(self, interaction: discord.Interaction, enabled: bool) -> None:
        guild = await _defer(interaction)
        await self.admin.set_alchemy_nsfw_check(guild.id, enabled)
        await _done(interaction, f"Alchemy NSFW check: **{'on' if enabled else 'off'}**.")

    # --- log channels --------------------------------------------------------------------------------

    @logs.command(name="channel", description="Where moderation (and kudos) events are posted")
    @app_commands.describe(channel="A channel I can post in. Leave out to stop logging.")
    async def log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        guild = await _defer(interaction)
        facts = channel_facts(guild, channel.id) if channel is not None else None
        await self.admin.set_log_channel(guild.id, facts)
        await _done(interaction, f"Log channel: {f'<#{channel.id}>' if channel else 'none'}.")

    @logs.command(
        name="kudos-channel", description="Where kudos events are posted instead of the log channel"
    )
    @app_commands.describe(channel="A channel I can post in. Leave out to use the log channel.")
    async def kudos_log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        guild = await _defer(interaction)
        facts = channel_facts(guild, channel.id) if channel is not None else None
        await self.admin.set_kudos_log_channel(guild.id, facts)
        shown = f"<#{channel.id}>" if channel else "same as the log channel"
        await _done(interaction, f"Kudos log channel: {shown}.")

    # --- kudos emojis --------------------------------------------------------------------------------

    @kudos_emoji.command(name="add", description="Make an emoji give kudos (or change its amount)")
    @app_commands.describe(emoji="A unicode emoji or a custom emoji", amount="Kudos given per reaction")
    async def kudos_emoji_add(
        self,
        interaction: discord.Interaction,
        emoji: EmojiText,
        amount: app_commands.Range[int, 1, None],  # the maximum: `admin.max_kudos_emoji_amount`
    ) -> None:
        guild = await _defer(interaction)
        shown, _updated = await self.admin.add_kudos_emoji(guild.id, emoji, amount)
        await _done(interaction, f"Reacting with {shown} now gives **{amount:,}** kudos.")

    @kudos_emoji.command(name="remove", description="Stop an emoji from giving kudos")
    async def kudos_emoji_remove(self, interaction: discord.Interaction, emoji: EmojiText) -> None:
        guild = await _defer(interaction)
        await self.admin.remove_kudos_emoji(guild.id, emoji)
        await _done(interaction, "That emoji no longer gives kudos.")

    @kudos_emoji.command(name="list", description="Emojis that give kudos here")
    async def kudos_emoji_list(self, interaction: discord.Interaction) -> None:
        guild = await _defer(interaction)
        lines = AdminService.kudos_emoji_lines(await self.admin.get(guild.id))
        if not lines:
            await _done(interaction, "No emoji gives kudos here yet: `/config kudos-emoji add`.")
            return
        embed = discord.Embed(title="Kudos emojis", description=_clip(lines, 4000), colour=HORDE_COLOUR)
        await interaction.followup.send(embed=embed, ephemeral=True)

    # --- blocked words -------------------------------------------------------------------------------

    @blocked_words.command(name="add", description="Block a word, phrase, or re: regex in prompts")
    @app_commands.describe(term="A word or phrase (look-alikes and plurals included), or re:<regex>")
    async def blocked_add(self, interaction: discord.Interaction, term: Term) -> None:
        guild = await _defer(interaction)
        updated = await self.admin.add_blocked_word(guild.id, term)
        await _done(
            interaction,
            f"Blocked {_code(term.strip())} ({len(updated.blocked_words)} term(s) on this "
            "server's list, plus the built-in rules).",
        )

    @blocked_words.command(name="remove", description="Unblock one of this server's own terms")
    async def blocked_remove(self, interaction: discord.Interaction, term: Term) -> None:
        guild = await _defer(interaction)
        await self.admin.remove_blocked_word(guild.id, term)
        await _done(
            interaction,
            f"Unblocked {_code(term.strip())}. The built-in safety rules still apply.",
        )

    @blocked_remove.autocomplete("term")
    async def blocked_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        # Autocomplete skips command checks: only managers may see the server's list.
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            return []
        terms = (await self.admin.get(interaction.guild_id)).blocked_words
        needle = current.casefold()
        return [app_commands.Choice(name=t[:100], value=t[:100]) for t in terms if needle in t.casefold()][
            :25
        ]

    @blocked_words.command(name="list", description="This server's own blocked terms")
    async def blocked_list(self, interaction: discord.Interaction) -> None:
        guild = await _defer(interaction)
        terms = (await self.admin.get(guild.id)).blocked_words
        note = "The built-in safety rules always apply and can't be removed."
        if not terms:
            await _done(interaction, f"This server has no blocked terms of its own. {note}")
            return
        lines = [_code(t) for t in terms]
        embed = discord.Embed(title="Blocked terms", description=_clip(lines, 4000), colour=HORDE_COLOUR)
        embed.set_footer(text=note)
        await interaction.followup.send(embed=embed, ephemeral=True)

    # --- role rules ----------------------------------------------------------------------------------

    @roles.command(name="linked", description="The role for members who linked an AI Horde account")
    @app_commands.describe(role="Leave out to stop granting it")
    async def role_linked(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        guild = await _defer(interaction)
        await self.admin.set_linked_role(guild.id, role_facts(guild, role.id) if role else None)
        await _done(interaction, f"Linked role: {role.mention if role else 'none'}.")

    @roles.command(name="worker", description="The role for members who run an AI Horde worker")
    @app_commands.describe(
        role="Leave out (with online_only also left out) to stop granting it",
        online_only="Only for workers seen online in the last day",
    )
    async def role_worker(
        self,
        interaction: discord.Interaction,
        role: discord.Role | None = None,
        online_only: bool | None = None,
    ) -> None:
        guild = await _defer(interaction)
        if role is None and online_only is not None:
            # Only the flag: keep the role.
            updated = await self.admin.set_worker_online_only(guild.id, online_only)
        else:
            updated = await self.admin.set_worker_role(
                guild.id, role_facts(guild, role.id) if role else None, online_only
            )
        shown = f"<@&{updated.worker_role_id}>" if updated.worker_role_id is not None else "none"
        extra = " (workers online in the last day only)" if updated.worker_online_only else ""
        await _done(interaction, f"Worker owner role: {shown}{extra}.")

    @roles.command(name="trusted", description="The role for members whose AI Horde account is trusted")
    @app_commands.describe(role="Leave out to stop granting it")
    async def role_trusted(self, interaction: discord.Interaction, role: discord.Role | None = None) -> None:
        guild = await _defer(interaction)
        await self.admin.set_trusted_role(guild.id, role_facts(guild, role.id) if role else None)
        await _done(interaction, f"Trusted role: {role.mention if role else 'none'}.")

    @roles.command(name="tier-add", description="Grant a role from a number of accumulated kudos")
    @app_commands.describe(kudos="The kudos threshold", role="The role for this tier")
    async def tier_add(self, interaction: discord.Interaction, kudos: Threshold, role: discord.Role) -> None:
        guild = await _defer(interaction)
        await self.admin.add_kudos_tier(guild.id, kudos, role_facts(guild, role.id))
        await _done(interaction, f"Members with at least **{kudos:,}** kudos get {role.mention}.")

    @roles.command(name="tier-remove", description="Remove a kudos tier")
    @app_commands.describe(kudos="The threshold of the tier to remove")
    async def tier_remove(self, interaction: discord.Interaction, kudos: Threshold) -> None:
        guild = await _defer(interaction)
        await self.admin.remove_kudos_tier(guild.id, kudos)
        await _done(interaction, f"Removed the tier at {kudos:,} kudos.")


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(AdminCog(bot))
