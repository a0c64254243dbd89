"""/party start and /party end: generation parties, Discord side (rules in `bot.services.parties`)."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot
from bot.errors import PermissionDeniedError, UserFacingError
from bot.services.parties import MAX_PARTY_NAME, MAX_WORDS_CHARS, PartyService
from bot.services.sharedkeys import MAX_SHARED_KEY_KUDOS
from bot.ui.options import declare_range
from bot.ui.text import escape_user_text

log = logging.getLogger(__name__)


class DiscordPartyGateway:
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot

    async def post(self, thread_id: int, text: str) -> bool:
        channel = self._bot.get_channel(thread_id)
        if not isinstance(channel, discord.Thread):
            return False
        try:
            await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            return False
        return True

    async def close(self, thread_id: int) -> bool:
        channel = self._bot.get_channel(thread_id)
        if not isinstance(channel, discord.Thread):
            return False
        try:
            await channel.edit(locked=True, archived=True)
        except discord.HTTPException:
            return False
        return True


def _is_moderator(interaction: discord.Interaction) -> bool:
    perms = getattr(interaction.user, "guild_permissions", None)
    return bool(perms and (perms.manage_guild or perms.manage_threads or perms.manage_messages))


class PartyCog(commands.Cog):
    party = app_commands.Group(name="party", description="Generation parties", guild_only=True)

    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.parties: PartyService = bot.services.parties
        self.gateway = DiscordPartyGateway(bot)
        limits = self.parties.settings
        declare_range(self, "party start", "award", max_value=limits.party_max_award)
        declare_range(self, "party start", "duration", max_value=int(limits.party_max_hours * 60))

    async def cog_load(self) -> None:
        self.parties.gateway.plug(self.gateway)
        self.parties.start()

    async def cog_unload(self) -> None:
        self.parties.stop()
        self.parties.gateway.unplug(self.gateway)

    @party.command(name="start", description="Open a thread where generating with a style earns your kudos")
    @app_commands.describe(
        name="The party's name (the thread's name)",
        style="The AI Horde style generations must use",
        award="Kudos from your account per award",
        duration="How long the party runs, in minutes",
        recurring="Award every generation (default: only each member's first)",
        pay="Pay members' generations in the thread from your account, up to this many kudos in all",
        words="Words every awarded prompt must contain, comma-separated (others are generated, not awarded)",
    )
    async def start(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_PARTY_NAME],
        style: app_commands.Range[str, 3, 200],
        award: app_commands.Range[int, 1, None],  # maxima: `kudos.party_max_award`, `kudos.party_max_hours`
        duration: app_commands.Range[int, 1, None],
        recurring: bool = False,
        pay: app_commands.Range[int, 1, MAX_SHARED_KEY_KUDOS] | None = None,
        words: app_commands.Range[str, 1, MAX_WORDS_CHARS] | None = None,
    ) -> None:
        channel = interaction.channel
        if interaction.guild_id is None or not isinstance(channel, discord.TextChannel):
            raise PermissionDeniedError("Start a party in a server's text channel (not in a thread or DM).")
        # Deferred first: checking the style may ask the Horde.
        await interaction.response.defer(ephemeral=True, thinking=True)
        party = await self.parties.open(
            guild_id=interaction.guild_id,
            channel_id=channel.id,
            host_id=interaction.user.id,
            name=name,
            style=style,
            award=award,
            duration_minutes=duration,
            recurring=recurring,
            pay=pay,
            words=words,
        )
        shown_name = escape_user_text(name, 80)
        try:
            thread = await channel.create_thread(
                name=name[:100], type=discord.ChannelType.public_thread, auto_archive_duration=1440
            )
        except discord.HTTPException:
            await self.parties.cancel_unopened(party)
            raise UserFacingError(
                "I couldn't open a thread here (missing Create Public Threads permission?). "
                "Ask a moderator, or start the party in another channel."
            ) from None
        party = await self.parties.attach_thread(party, thread.id)
        rules = self.parties.rules_text(party, shown_name, escape_user_text(party.style, 200))
        first = await thread.send(rules, allowed_mentions=discord.AllowedMentions.none())
        try:
            await first.pin()
        except discord.HTTPException:
            log.info("party %s: could not pin the rules in thread %s", party.id, thread.id)
        await interaction.followup.send(f"The party **{shown_name}** is on: {thread.mention}", ephemeral=True)

    @start.autocomplete("style")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        choices = await self.bot.services.model_catalog.style_choices(current)
        return [app_commands.Choice(name=label, value=value) for label, value in choices]

    @party.command(name="end", description="End the party (its host or a moderator)")
    async def end(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        party = await self.parties.end(
            thread_id=interaction.channel_id,
            guild_id=interaction.guild_id,
            user_id=interaction.user.id,
            moderator=_is_moderator(interaction),
        )
        await interaction.followup.send(
            f"The party **{escape_user_text(party.name, 80)}** has ended.", ephemeral=True
        )


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(PartyCog(bot))
