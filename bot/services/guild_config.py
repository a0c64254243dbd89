"""Per-guild settings: one typed, validated document per guild, stored as JSON.

Every feature reads its settings from `GuildConfig`; the admin feature (`/config`) writes them. Changes
take effect at once: readers always go through `GuildConfigService.get`, which caches per guild and is
invalidated by `update`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.clock import Clock
from bot.db.guild_settings import GuildSettingsRepository
from bot.errors import InvalidInputError
from bot.horde.limits import (
    MAX_N,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_STEPS,
    MIN_N,
    MIN_PIXELS,
    MIN_SIDE,
    MIN_STEPS,
    SIDE_STEP,
)

NsfwPolicy = Literal["off", "nsfw_channels"]

MAX_COOLDOWN_SECONDS = 3600  # the longest per-member cooldown an admin may set
MAX_KUDOS_THRESHOLD = 10**12  # a kudos tier's threshold: far above any account, below JSON's safe integers


class KudosTier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: int = Field(ge=0, le=MAX_KUDOS_THRESHOLD)
    role_id: int


class GuildConfig(BaseModel):
    """Everything an admin can set for one guild. Unknown keys are rejected (import safety)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Generation
    generation_channels: list[int] = Field(default_factory=list)  # empty: every channel
    nsfw_policy: NsfwPolicy = "nsfw_channels"
    allow_anonymous: bool = True
    default_model: str | None = None
    default_steps: int | None = Field(default=None, ge=MIN_STEPS, le=MAX_STEPS)
    max_steps: int | None = Field(default=None, ge=MIN_STEPS, le=MAX_STEPS)
    default_width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_STEP)
    default_height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_STEP)
    max_pixels: int | None = Field(default=None, ge=MIN_PIXELS, le=MAX_PIXELS)
    max_n: int | None = Field(default=None, ge=MIN_N, le=MAX_N)
    cooldown_seconds: int | None = Field(default=None, ge=0, le=MAX_COOLDOWN_SECONDS)
    # Safety
    blocked_words: list[str] = Field(default_factory=list)
    alchemy_nsfw_check: bool = False
    # Logging
    log_channel_id: int | None = None
    kudos_log_channel_id: int | None = None  # falls back to log_channel_id
    # Kudos gifting: `emoji_key(...)` (unicode text, or a custom emoji's id) -> amount
    kudos_emojis: dict[str, int] = Field(default_factory=dict)
    # Automated roles
    linked_role_id: int | None = None
    worker_role_id: int | None = None
    worker_online_only: bool = False
    trusted_role_id: int | None = None
    kudos_tiers: list[KudosTier] = Field(default_factory=list)

    @field_validator("kudos_emojis")
    @classmethod
    def _positive_amounts(cls, value: dict[str, int]) -> dict[str, int]:
        for emoji, amount in value.items():
            if amount <= 0:
                raise ValueError(f"the amount for {emoji} must be a positive whole number")
        return value


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


class GuildConfigService:
    def __init__(self, repo: GuildSettingsRepository, clock: Clock) -> None:
        self._repo = repo
        self._clock = clock
        self._cache: dict[int, GuildConfig] = {}
        # One lock per guild: an update reads, changes and writes the whole document, so two at once
        # would each write back the other's old values (one lost). Guilds don't wait on each other.
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, guild_id: int) -> asyncio.Lock:
        lock = self._locks.get(guild_id)
        if lock is None:
            lock = self._locks[guild_id] = asyncio.Lock()
        return lock

    async def get(self, guild_id: int | None) -> GuildConfig:
        """The guild's settings (defaults for DMs and unknown guilds)."""
        if guild_id is None:
            return GuildConfig()
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached.model_copy(deep=True)
        data = await self._repo.get(guild_id)
        try:
            config = GuildConfig.model_validate(data)
        except ValidationError:
            # A document written by a newer or older version: keep what still validates.
            config = GuildConfig.model_validate(
                {k: v for k, v in data.items() if k in GuildConfig.model_fields and _valid_field(k, v)}
            )
        self._cache[guild_id] = config
        return config.model_copy(deep=True)

    async def update(self, guild_id: int, **changes: Any) -> GuildConfig:
        """Validate and store changes; raises InvalidInputError naming the problem. Atomic per guild:
        concurrent updates of different settings all land."""
        async with self._lock(guild_id):
            current = await self.get(guild_id)
            try:
                updated = GuildConfig.model_validate({**current.model_dump(), **changes})
            except ValidationError as exc:
                raise InvalidInputError(describe_validation_error(exc)) from None
            await self._repo.save(guild_id, updated.model_dump(mode="json"), self._clock.now())
            self._cache[guild_id] = updated
            return updated.model_copy(deep=True)

    async def replace(self, guild_id: int, data: dict[str, Any]) -> GuildConfig:
        """Replace the whole document (import); unknown keys and bad values are rejected."""
        try:
            config = GuildConfig.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(describe_validation_error(exc)) from None
        async with self._lock(guild_id):
            await self._repo.save(guild_id, config.model_dump(mode="json"), self._clock.now())
            self._cache[guild_id] = config
            return config.model_copy(deep=True)


def _valid_field(name: str, value: Any) -> bool:
    try:
        GuildConfig.model_validate({name: value})
    except ValidationError:
        return False
    return True


def emoji_key(name: str | None, emoji_id: int | None) -> str:
    """The key of an emoji in `GuildConfig.kudos_emojis`.

    Custom emojis are keyed by id (digits), so renaming one keeps its mapping; unicode emojis by their text
    without variation selectors (clients send "❤" and "❤️" for the same heart).
    """
    if emoji_id is not None:
        return str(emoji_id)
    return (name or "").replace("\ufe0f", "").strip()


def render_emoji_key(key: str) -> str:
    """How a `kudos_emojis` key is shown in Discord (a custom emoji renders by id whatever its name)."""
    return f"<:emoji:{key}>" if key.isdigit() else key
