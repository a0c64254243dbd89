"""`Notifier` for a live bot: guild log channels and DMs, with mentions disabled."""

from __future__ import annotations

import logging

import discord

from bot.hooks import Port
from bot.notify import LogKind
from bot.services.guild_config import GuildConfigService
from bot.ui.delivery import with_nonce

log = logging.getLogger(__name__)


class DiscordNotifier:
    def __init__(self, guild_config: GuildConfigService) -> None:
        self._guild_config = guild_config
        # The bot plugs itself in when it is built and out when it closes (nothing is sent before or after).
        self.client: Port[discord.Client | None] = Port("notifier.client", None)
        # Channels already reported as unusable: logged once, not on every event.
        self._broken_channels: set[int] = set()

    async def log_to_guild(self, guild_id: int, text: str, *, kind: LogKind = "moderation") -> bool:
        client = self.client.get()
        if client is None:
            return False
        config = await self._guild_config.get(guild_id)
        channel_id = config.log_channel_id
        if kind == "kudos" and config.kudos_log_channel_id is not None:
            channel_id = config.kudos_log_channel_id
        if channel_id is None:
            return False
        channel = client.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            self._report_broken(channel_id, "deleted or not visible")
            return False
        if getattr(getattr(channel, "guild", None), "id", None) != guild_id:
            # Never post one server's events in another server's channel.
            self._report_broken(channel_id, f"not a channel of guild {guild_id}")
            return False
        try:
            await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            self._report_broken(channel_id, f"{exc.status} {exc.text}")
            return False
        self._broken_channels.discard(channel_id)
        return True

    def _report_broken(self, channel_id: int, why: str) -> None:
        if channel_id not in self._broken_channels:
            self._broken_channels.add(channel_id)
            log.warning("log channel %s unusable: %s", channel_id, why)

    async def dm(self, user_id: int, text: str, *, nonce: str | None = None) -> bool:
        client = self.client.get()
        if client is None:
            return False
        try:
            user = client.get_user(user_id) or await client.fetch_user(user_id)
            await user.send(text[:2000], allowed_mentions=discord.AllowedMentions.none(), **with_nonce(nonce))
        except discord.HTTPException:
            return False
        return True
