"""Options as Discord delivers them: limits from the settings declared like fixed ones, and users that
the payload didn't resolve.

`app_commands.Range[int, 1, 100]` is fixed when the module is imported; a limit an operator sets in
config.toml (the largest /transfer, a party's longest duration) is only known once the bot is built. The
cog declares it here, in its `__init__`, on its own copy of the command, before the tree is synced, so
Discord's client enforces the same bound the service checks.
"""

from __future__ import annotations

import dataclasses

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidInputError


def declare_range(
    cog: commands.Cog,
    command: str,
    option: str,
    *,
    min_value: int | float | None = None,
    max_value: int | float | None = None,
) -> None:
    """Set `option`'s min/max on the cog's command `command` (its qualified name, e.g. "party start")."""
    for found in cog.walk_app_commands():
        if isinstance(found, app_commands.Command) and found.qualified_name == command:
            # The cog's copy shares nothing with other bots built in the same process (tests build many).
            param = found._params[option]
            found._params[option] = dataclasses.replace(
                param,
                min_value=param.min_value if min_value is None else min_value,
                max_value=param.max_value if max_value is None else max_value,
            )
            return
    raise LookupError(f"{type(cog).__name__} has no command {command!r}")


async def resolved_user(
    interaction: discord.Interaction, value: discord.abc.Snowflake
) -> discord.User | discord.Member:
    """A user option's user. Discord sends the user along with the command; when the payload doesn't
    resolve it (a broken or hostile client), discord.py hands over a bare `discord.Object` with only an id:
    look it up (cache, then Discord), or ask for a member picked from the list."""
    if isinstance(value, (discord.User, discord.Member)):
        return value
    guild = interaction.guild
    found: discord.User | discord.Member | None = guild.get_member(value.id) if guild is not None else None
    found = found or interaction.client.get_user(value.id)
    if found is not None:
        return found
    try:
        return await interaction.client.fetch_user(value.id)
    except discord.NotFound:
        raise InvalidInputError(UNKNOWN_USER) from None
    except discord.HTTPException:
        raise InvalidInputError(UNKNOWN_USER + " (Discord didn't answer; try again in a moment.)") from None


UNKNOWN_USER = "I can't tell who that is. Pick a member from the list Discord offers."
