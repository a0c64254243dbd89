"""Automated roles, Discord side: the `RoleGateway` the roles service works through.

The rules, the background sync and problem reporting live in `bot.services.roles`; this only reads
members and roles from discord.py and sends the role PUT/DELETE requests.
"""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from bot.bot import HordeBot
from bot.services.roles import MemberGoneError, ProblemKind, RoleActionError, RolesService

log = logging.getLogger(__name__)
REASON = "Automated roles (AI Horde account)"
UNKNOWN_MEMBER = 10007
UNKNOWN_ROLE = 10011


class DiscordRoleGateway:
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot

    def ready(self) -> bool:
        return self._bot.is_ready()

    def guild_ids(self) -> list[int]:
        return [guild.id for guild in self._bot.guilds]

    def _members_cached(self, guild: discord.Guild) -> bool:
        """With the Server Members intent and the guild chunked, the cache lists every member."""
        return self._bot.intents.members and guild.chunked

    async def member_roles(self, guild_id: int, discord_id: int) -> frozenset[int] | None:
        guild = self._bot.get_guild(guild_id)
        if guild is None:
            return None
        member = guild.get_member(discord_id)
        if member is None:
            if self._members_cached(guild):
                return None
            try:
                member = await guild.fetch_member(discord_id)
            except discord.NotFound:
                return None
            except discord.HTTPException as exc:
                log.warning("roles: can't read member %s of guild %s: %s", discord_id, guild_id, exc)
                return None
        return frozenset(role.id for role in member.roles if not role.is_default())

    def role_problem(self, guild_id: int, role_id: int) -> ProblemKind | None:
        guild = self._bot.get_guild(guild_id)
        if guild is None:
            return None
        me = guild.me
        if me is None:
            return None
        if not me.guild_permissions.manage_roles:
            return ProblemKind.NO_MANAGE_ROLES
        role = guild.get_role(role_id)
        if role is None or role.is_default():
            return ProblemKind.ROLE_DELETED
        if role.managed:
            return ProblemKind.ROLE_MANAGED
        if role >= me.top_role:
            return ProblemKind.ROLE_TOO_HIGH
        return None

    async def add_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        try:
            await self._bot.http.add_role(guild_id, discord_id, role_id, reason=REASON)
        except discord.HTTPException as exc:
            raise _translate(exc) from None

    async def remove_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        try:
            await self._bot.http.remove_role(guild_id, discord_id, role_id, reason=REASON)
        except discord.HTTPException as exc:
            raise _translate(exc) from None


def _translate(exc: discord.HTTPException) -> Exception:
    if isinstance(exc, discord.NotFound):
        if exc.code == UNKNOWN_MEMBER:
            return MemberGoneError()
        return RoleActionError(ProblemKind.ROLE_DELETED, exc.text)
    if isinstance(exc, discord.Forbidden):
        return RoleActionError(ProblemKind.FORBIDDEN, exc.text)
    # Anything else (5xx, rate limits discord.py gave up on) is transient: the next sync retries.
    return exc


class RolesCog(commands.Cog):
    def __init__(self, bot: HordeBot, roles: RolesService) -> None:
        self.bot = bot
        self.roles = roles
        self.gateway = DiscordRoleGateway(bot)

    async def cog_load(self) -> None:
        self.roles.gateway.plug(self.gateway)
        self.roles.start()

    async def cog_unload(self) -> None:
        self.roles.stop()
        self.roles.gateway.unplug(self.gateway)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(RolesCog(bot, bot.services.roles))
