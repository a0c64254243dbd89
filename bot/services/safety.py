"""Safety rules around every request the bot sends to the Horde (issue #4).

The prompt filter itself lives in `bot.safety`; this service applies it with the guild's own blocked
terms, decides where NSFW is allowed, and handles the Horde's own rejections as incidents.

Contract used by other features (keep these signatures stable):
- `check_prompt(...)`: call before any Horde call that carries a prompt; raises `PromptRefusedError`
  (or `RateLimitedError` for a member on a safety cooldown).
- `nsfw_allowed(...)`: whether a request may go out with `nsfw: true`.
- `on_horde_rejection(...)`: call when the Horde answers `CorruptPrompt` or `TimeoutIP`.
"""

from __future__ import annotations

import logging

from bot.clock import Clock
from bot.errors import UserFacingError
from bot.notify import Notifier
from bot.safety import PromptFilter
from bot.services.guild_config import GuildConfigService

log = logging.getLogger(__name__)

REFUSED = "This prompt can't be generated here. Please change it and try again."


class PromptRefusedError(UserFacingError):
    def __init__(self, message: str = REFUSED) -> None:
        super().__init__(message)


class SafetyService:
    def __init__(
        self,
        prompt_filter: PromptFilter,
        guild_config: GuildConfigService,
        notifier: Notifier,
        clock: Clock,
    ) -> None:
        self._filter = prompt_filter
        self._guild_config = guild_config
        self._notifier = notifier
        self._clock = clock

    def warm_up(self) -> None:
        """Compile the word lists now rather than on the first member's request."""
        self._filter.warm_up()

    async def check_prompt(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        prompt: str,
        negative: str | None = None,
        channel_id: int | None = None,
    ) -> None:
        config = await self._guild_config.get(guild_id)
        verdict = self._filter.check(prompt, negative or "", config.blocked_words)
        if verdict.allowed:
            return
        log.warning(
            "Refused a prompt (%s) from user %s in guild %s: %r", verdict.reason, user_id, guild_id, prompt
        )
        raise PromptRefusedError()

    async def nsfw_allowed(self, *, guild_id: int | None, channel_nsfw: bool, is_dm: bool) -> bool:
        if is_dm or guild_id is None:
            return False
        config = await self._guild_config.get(guild_id)
        return config.nsfw_policy == "nsfw_channels" and channel_nsfw

    async def on_horde_rejection(
        self, *, guild_id: int | None, user_id: int, prompt: str, negative: str | None, rc: str
    ) -> None:
        log.warning("The Horde rejected a prompt (%s) from user %s in guild %s", rc, user_id, guild_id)
