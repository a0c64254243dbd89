"""/terms and /about: what the bot stores and the rules; what the bot is and how it is doing."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot
from bot.services.about import uptime_text
from bot.ui.embeds import HORDE_COLOUR, format_number
from bot.ui.terms import terms_embed


class AboutCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="terms", description="What this bot stores, for how long, who sees it, and the rules"
    )
    async def terms(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            embed=terms_embed(self.bot.services.about.horde_url, self.bot.services.about.retention),
            ephemeral=True,
        )

    @app_commands.command(name="about", description="This bot's version, servers, members, jobs and uptime")
    async def about(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        info = await self.bot.services.about.info(servers=len(self.bot.guilds))
        embed = discord.Embed(
            title="hordebot",
            description="A Discord bot for the AI Horde, the free crowdsourced image and text generator.",
            colour=HORDE_COLOUR,
        )
        embed.add_field(name="Version", value=info.version, inline=True)
        embed.add_field(name="Servers", value=format_number(info.servers), inline=True)
        embed.add_field(name="Linked members", value=format_number(info.linked_members), inline=True)
        embed.add_field(name="Jobs in flight", value=format_number(info.jobs_in_flight), inline=True)
        embed.add_field(name="Uptime", value=uptime_text(info.uptime_seconds), inline=True)
        embed.add_field(name="AI Horde", value=info.horde_url, inline=True)
        embed.set_footer(text="What the bot stores about you: /terms")
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(AboutCog(bot))
