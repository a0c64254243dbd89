"""Embeds shared by several features."""

from __future__ import annotations

import discord

from bot.horde.models import HordeUser
from bot.ui.text import escape_user_text

HORDE_COLOUR = discord.Colour(0x5B3FD6)


def format_number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")


def horde_user_embed(user: HordeUser, *, title: str, private: bool) -> discord.Embed:
    embed = discord.Embed(title=title, colour=HORDE_COLOUR)
    embed.add_field(name="Username", value=escape_user_text(user.username, 256), inline=True)
    embed.add_field(name="User id", value=str(user.id), inline=True)
    embed.add_field(name="Kudos", value=format_number(user.kudos), inline=True)
    embed.add_field(name="Workers", value=str(user.worker_count), inline=True)
    embed.add_field(name="Trusted", value="yes" if user.trusted else "no", inline=True)
    usage = user.records.usage
    embed.add_field(
        name="Usage",
        value=f"{format_number(usage.megapixelsteps)} megapixelsteps, {usage.tokens:,} tokens",
        inline=False,
    )
    requests = user.records.request
    embed.add_field(
        name="Requests",
        value=f"{requests.image:,} images, {requests.text:,} texts, {requests.interrogation:,} alchemy",
        inline=False,
    )
    if private:
        embed.set_footer(text="Only you can see this.")
    return embed
