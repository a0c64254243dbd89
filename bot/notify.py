"""How services tell people things without importing Discord.

Services depend on the `Notifier` protocol; the bot provides `DiscordNotifier` (in `bot.ui.notifier`).
"""

from __future__ import annotations

from typing import Literal, Protocol

LogKind = Literal["moderation", "kudos", "roles", "generation"]


class Notifier(Protocol):
    async def log_to_guild(self, guild_id: int, text: str, *, kind: LogKind = "moderation") -> bool:
        """Post to the guild's configured log channel. False if none is set or it can't be posted to."""

    async def dm(self, user_id: int, text: str, *, nonce: str | None = None) -> bool:
        """Send a direct message. False if the member does not accept DMs from the bot. With a `nonce`, a
        second message with it (from any process of the bot, within a few minutes) is not sent again."""
