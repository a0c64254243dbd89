"""Bot operation: owner-only command sync."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot
from bot.errors import PermissionDeniedError
from bot.services import validation

SYNC_SCOPES = [
    app_commands.Choice(name="global", value="global"),
    app_commands.Choice(name="here", value="here"),
]


class MetaCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot

    @app_commands.command(name="sync", description="Bot owner: publish the slash commands")
    @app_commands.describe(scope="'global' (up to an hour to show) or 'here' (this server, instant)")
    @app_commands.choices(scope=SYNC_SCOPES)
    @app_commands.default_permissions(administrator=True)
    async def sync(self, interaction: discord.Interaction, scope: str = "global") -> None:
        if not await self.bot.is_owner(interaction.user):
            raise PermissionDeniedError("Only the bot's owner can sync commands.")
        scope = validation.choice(scope, "scope", [c.value for c in SYNC_SCOPES])
        await interaction.response.defer(ephemeral=True, thinking=True)
        if scope == "here":
            if interaction.guild_id is None:
                raise PermissionDeniedError("Use `scope: here` inside a server.")
            count = await self.bot.sync_commands(interaction.guild_id)
        else:
            count = await self.bot.sync_commands()
        await interaction.followup.send(f"Synced {count} commands ({scope}).", ephemeral=True)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(MetaCog(bot))
