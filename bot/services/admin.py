"""Per-server administration (`/config`): the rules for changing a guild's settings.

Discord-free: the cog describes channels and roles as plain facts (`ChannelFacts`, `RoleFacts`: does it
exist, what may the bot do there) and this service decides whether a setting is acceptable, with a message
naming the problem. Every change goes through `GuildConfigService`, whose cache is updated at once, so
settings take effect without a restart.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast, get_args

from pydantic import ValidationError

from bot.config import AdminSettings, Settings
from bot.errors import InvalidInputError, UserFacingError
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.limits import MAX_N, MAX_PIXELS, MAX_SIDE, MAX_STEPS, MIN_N, MIN_PIXELS, MIN_SIDE, MIN_STEPS
from bot.safety import MAX_CUSTOM_TERM_LENGTH as MAX_CUSTOM_TERM_LENGTH
from bot.safety import validate_custom_term
from bot.services import validation
from bot.services.guild_config import (
    MAX_COOLDOWN_SECONDS,
    MAX_KUDOS_THRESHOLD,
    GuildConfig,
    GuildConfigService,
    KudosTier,
    NsfwPolicy,
    describe_validation_error,
    emoji_key,
    render_emoji_key,
)
from bot.services.info import InfoService

_CUSTOM_EMOJI = re.compile(r"^<(a?):([A-Za-z0-9_~]{1,32}):([0-9]{15,21})>$")
# Keys of `GuildConfig` that hold a channel id, and those holding a role id (import re-validation).
CHANNEL_KEYS = ("log_channel_id", "kudos_log_channel_id")
ROLE_KEYS = ("linked_role_id", "worker_role_id", "trusted_role_id")


def load_admin_settings(settings: Settings) -> AdminSettings:
    return settings.admin


@dataclass(frozen=True)
class ChannelFacts:
    """What the cog found out about a channel, for the bot's own member."""

    id: int
    name: str | None  # None: the channel does not exist (deleted, or in another server)
    text: bool = True  # a channel messages can be posted in
    can_view: bool = True
    can_send: bool = True
    can_embed: bool = True

    @property
    def label(self) -> str:
        return f"#{self.name}" if self.name is not None else f"channel {self.id}"


@dataclass(frozen=True)
class RoleFacts:
    """What the cog found out about a role, relative to the bot."""

    id: int
    name: str | None  # None: the role does not exist in this server
    is_default: bool = False  # @everyone
    managed: bool = False  # owned by an integration (a bot's own role, Server Booster, ...)
    below_bot: bool = True  # lower than the bot's highest role
    bot_can_manage_roles: bool = True

    @property
    def label(self) -> str:
        return f"@{self.name}" if self.name is not None else f"role {self.id}"


@dataclass(frozen=True)
class ImportPlan:
    """A validated import, waiting for the admin's confirmation."""

    config: GuildConfig
    channel_ids: dict[str, list[int]]
    role_ids: dict[str, list[int]]


def channel_problem(channel: ChannelFacts) -> str | None:
    """Why the bot can't use `channel` for posting, or None."""
    if channel.name is None:
        return f"{channel.label} doesn't exist in this server (deleted?)."
    if not channel.text:
        return f"{channel.label} is not a text channel."
    # The first missing permission only: without View Channel, Discord reports every other one missing too.
    for permission, ok in (
        ("View Channel", channel.can_view),
        ("Send Messages", channel.can_send),
        ("Embed Links", channel.can_embed),
    ):
        if not ok:
            return f"I can't post in {channel.label}: I'm missing {permission} there."
    return None


def role_problem(role: RoleFacts) -> str | None:
    """Why the bot can't grant `role`, or None."""
    if role.name is None:
        return f"{role.label} doesn't exist in this server (deleted?)."
    if role.is_default:
        return "@everyone can't be used: every member has it already."
    if role.managed:
        return f"{role.label} is managed by an integration (a bot or Server Boosts); nobody can grant it."
    if not role.bot_can_manage_roles:
        return "I need the Manage Roles permission to grant roles."
    if not role.below_bot:
        return (
            f"{role.label} is not below my own highest role, so Discord won't let me grant it. "
            "Move my role above it in Server Settings → Roles."
        )
    return None


def parse_emoji(text: str) -> tuple[str, str]:
    """A kudos emoji as typed: (its `kudos_emojis` key, how to show it)."""
    value = text.strip()
    custom = _CUSTOM_EMOJI.match(value)
    if custom:
        key = emoji_key(custom.group(2), int(custom.group(3)))
        return key, value
    key = emoji_key(value, None)
    if not key or len(key) > 16 or not _looks_like_unicode_emoji(key):
        raise InvalidInputError(
            "That is not an emoji. Use a unicode emoji (like 👍) or one of this server's custom emojis "
            "(like <:name:123456789012345678>)."
        )
    return key, key


def _looks_like_unicode_emoji(text: str) -> bool:
    """One emoji (possibly a ZWJ sequence, a flag or a keycap), not text or several emojis."""
    if any(ch.isspace() or (ch.isascii() and ch not in "#*0123456789") for ch in text):
        return False
    units = 0
    regional = 0
    previous = ""
    for ch in text:
        if 0x1F1E6 <= ord(ch) <= 0x1F1FF:  # regional indicators: two make one flag
            regional += 1
        elif (unicodedata.category(ch) == "So" and previous != "\u200d") or ch == "\u20e3":  # 1️⃣ keycap
            units += 1
        previous = ch
    units += (regional + 1) // 2
    return units == 1


def _is_unicode_key(key: str) -> bool:
    return 0 < len(key) <= 16 and _looks_like_unicode_emoji(key)


def parse_import(data: bytes) -> GuildConfig:
    """An uploaded settings file as a `GuildConfig`; raises InvalidInputError naming the problem."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidInputError("That file is not valid JSON. Use a file made by `/config export`.") from None
    if not isinstance(document, dict):
        raise InvalidInputError("The file must hold one JSON object, as made by `/config export`.")
    try:
        config = GuildConfig.model_validate(document)
    except ValidationError as exc:
        raise InvalidInputError(
            "Nothing was changed: the file has problems. " + describe_validation_error(exc)
        ) from None
    return config


class AdminService:
    def __init__(self, guild_config: GuildConfigService, info: InfoService, settings: AdminSettings) -> None:
        self._config = guild_config
        self._info = info
        self.settings = settings

    async def get(self, guild_id: int) -> GuildConfig:
        return await self._config.get(guild_id)

    # --- generation channels -------------------------------------------------------------------------

    async def add_generation_channel(self, guild_id: int, channel: ChannelFacts) -> GuildConfig:
        _require_channel(channel)
        current = await self._config.get(guild_id)
        if channel.id in current.generation_channels:
            raise InvalidInputError(f"{channel.label} is already in the list.")
        if len(current.generation_channels) >= self.settings.max_generation_channels:
            raise InvalidInputError(
                f"At most {self.settings.max_generation_channels} generation channels; remove one first."
            )
        return await self._config.update(
            guild_id, generation_channels=[*current.generation_channels, channel.id]
        )

    async def remove_generation_channel(self, guild_id: int, channel_id: int) -> GuildConfig:
        current = await self._config.get(guild_id)
        if channel_id not in current.generation_channels:
            raise InvalidInputError("That channel is not in the list.")
        remaining = [c for c in current.generation_channels if c != channel_id]
        return await self._config.update(guild_id, generation_channels=remaining)

    async def clear_generation_channels(self, guild_id: int) -> GuildConfig:
        return await self._config.update(guild_id, generation_channels=[])

    # --- generation rules ----------------------------------------------------------------------------

    async def set_nsfw_policy(self, guild_id: int, policy: str) -> GuildConfig:
        checked = cast(NsfwPolicy, validation.choice(policy, "policy", get_args(NsfwPolicy)))
        return await self._config.update(guild_id, nsfw_policy=checked)

    async def set_allow_anonymous(self, guild_id: int, allowed: bool) -> GuildConfig:
        return await self._config.update(guild_id, allow_anonymous=allowed)

    async def set_alchemy_nsfw_check(self, guild_id: int, enabled: bool) -> GuildConfig:
        return await self._config.update(guild_id, alchemy_nsfw_check=enabled)

    async def set_default_model(self, guild_id: int, name: str | None) -> GuildConfig:
        if name is None or not name.strip():
            return await self._config.update(guild_id, default_model=None)
        wanted = name.strip()
        try:
            models = await self._info.models("image")
        except (HordeUnavailable, HordeError):
            raise UserFacingError(
                "I can't check the model right now: the AI Horde is not answering. Nothing was changed; "
                "please try again in a few minutes."
            ) from None
        names = {m.name.casefold(): m.name for m in models}
        found = names.get(wanted.casefold())
        if found is None:
            close = difflib.get_close_matches(wanted, [m.name for m in models], n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else " `/models` lists them."
            raise InvalidInputError(
                f"No AI Horde worker serves an image model called {wanted[:100]!r} right now.{hint}"
            )
        return await self._config.update(guild_id, default_model=found)

    async def set_default_steps(self, guild_id: int, steps: int | None) -> GuildConfig:
        current = await self._config.get(guild_id)
        if steps is not None:
            _in_range("Default steps", steps, MIN_STEPS, MAX_STEPS)
            if current.max_steps is not None and steps > current.max_steps:
                raise InvalidInputError(
                    f"Default steps ({steps}) can't be above the maximum ({current.max_steps})."
                )
        return await self._config.update(guild_id, default_steps=steps)

    async def set_max_steps(self, guild_id: int, steps: int | None) -> GuildConfig:
        current = await self._config.get(guild_id)
        if steps is not None:
            _in_range("Maximum steps", steps, MIN_STEPS, MAX_STEPS)
            if current.default_steps is not None and steps < current.default_steps:
                raise InvalidInputError(
                    f"The maximum ({steps}) can't be below the default steps ({current.default_steps})."
                )
        return await self._config.update(guild_id, max_steps=steps)

    async def set_default_size(self, guild_id: int, width: int | None, height: int | None) -> GuildConfig:
        if (width is None) != (height is None):
            raise InvalidInputError("Give both width and height, or neither to go back to the default.")
        current = await self._config.get(guild_id)
        if width is not None and height is not None:
            for label, value in (("Width", width), ("Height", height)):
                _in_range(label, value, MIN_SIDE, MAX_SIDE)
                if value % 64:
                    raise InvalidInputError(f"{label} must be a multiple of 64 (got {value}).")
            if current.max_pixels is not None and width * height > current.max_pixels:
                raise InvalidInputError(
                    f"{width}×{height} is {width * height:,} pixels, above this server's maximum "
                    f"({current.max_pixels:,})."
                )
        return await self._config.update(guild_id, default_width=width, default_height=height)

    async def set_max_pixels(self, guild_id: int, pixels: int | None) -> GuildConfig:
        current = await self._config.get(guild_id)
        if pixels is not None:
            _in_range("Maximum pixels", pixels, MIN_PIXELS, MAX_PIXELS)
            if (
                current.default_width is not None
                and current.default_height is not None
                and current.default_width * current.default_height > pixels
            ):
                raise InvalidInputError(
                    f"The default size ({current.default_width}×{current.default_height}) is larger than "
                    f"{pixels:,} pixels; change it first."
                )
        return await self._config.update(guild_id, max_pixels=pixels)

    async def set_max_n(self, guild_id: int, n: int | None) -> GuildConfig:
        if n is not None:
            _in_range("Maximum images per request", n, MIN_N, MAX_N)
        return await self._config.update(guild_id, max_n=n)

    async def set_cooldown(self, guild_id: int, seconds: int | None) -> GuildConfig:
        if seconds is not None:
            _in_range("The cooldown", seconds, 0, MAX_COOLDOWN_SECONDS)
        return await self._config.update(guild_id, cooldown_seconds=seconds)

    # --- log channels --------------------------------------------------------------------------------

    async def set_log_channel(self, guild_id: int, channel: ChannelFacts | None) -> GuildConfig:
        if channel is not None:
            _require_channel(channel)
        return await self._config.update(guild_id, log_channel_id=channel.id if channel else None)

    async def set_kudos_log_channel(self, guild_id: int, channel: ChannelFacts | None) -> GuildConfig:
        if channel is not None:
            _require_channel(channel)
        return await self._config.update(guild_id, kudos_log_channel_id=channel.id if channel else None)

    # --- kudos emojis --------------------------------------------------------------------------------

    async def add_kudos_emoji(self, guild_id: int, emoji: str, amount: int) -> tuple[str, GuildConfig]:
        """Map an emoji to a kudos amount (replacing its old amount); returns how to show the emoji."""
        key, shown = parse_emoji(emoji)
        cap = self.settings.max_kudos_emoji_amount
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidInputError(f"The amount must be a positive whole number (1 to {cap:,}).")
        if amount < 1:
            raise InvalidInputError(
                f"The amount must be a positive whole number (1 to {cap:,}), not {amount}."
            )
        if amount > cap:
            raise InvalidInputError(f"The amount can be at most {cap:,} kudos on this bot.")
        current = await self._config.get(guild_id)
        if key not in current.kudos_emojis and len(current.kudos_emojis) >= self.settings.max_kudos_emojis:
            raise InvalidInputError(
                f"At most {self.settings.max_kudos_emojis} kudos emojis; remove one first."
            )
        updated = await self._config.update(guild_id, kudos_emojis={**current.kudos_emojis, key: amount})
        return shown, updated

    async def remove_kudos_emoji(self, guild_id: int, emoji: str) -> GuildConfig:
        key, _shown = parse_emoji(emoji)
        current = await self._config.get(guild_id)
        if key not in current.kudos_emojis:
            raise InvalidInputError(
                "That emoji doesn't give kudos here. `/config kudos-emoji list` shows them."
            )
        remaining = {k: v for k, v in current.kudos_emojis.items() if k != key}
        return await self._config.update(guild_id, kudos_emojis=remaining)

    @staticmethod
    def kudos_emoji_lines(config: GuildConfig) -> list[str]:
        return [
            f"{render_emoji_key(key)} → {amount:,} kudos"
            for key, amount in sorted(config.kudos_emojis.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    # --- blocked words -------------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, term: str) -> GuildConfig:
        checked = validation.text(term, "term", max_chars=MAX_CUSTOM_TERM_LENGTH, single_line=True)
        if checked is None:
            raise InvalidInputError("`term` is empty (only spaces): type the word or phrase to block.")
        term = checked
        problem = validate_custom_term(term)
        if problem is not None:
            raise InvalidInputError(f"That term can't be used: {problem}")
        current = await self._config.get(guild_id)
        if term.casefold() in (t.casefold() for t in current.blocked_words):
            raise InvalidInputError("That term is already blocked.")
        if len(current.blocked_words) >= self.settings.max_blocked_words:
            raise InvalidInputError(
                f"At most {self.settings.max_blocked_words} blocked terms; remove one first."
            )
        return await self._config.update(guild_id, blocked_words=[*current.blocked_words, term])

    async def remove_blocked_word(self, guild_id: int, term: str) -> GuildConfig:
        needle = term.strip().casefold()
        current = await self._config.get(guild_id)
        remaining = [t for t in current.blocked_words if t.casefold() != needle]
        if len(remaining) == len(current.blocked_words):
            raise InvalidInputError(
                "That term is not on this server's list. The built-in safety rules can't be removed; "
                "`/config blocked-words list` shows this server's own terms."
            )
        return await self._config.update(guild_id, blocked_words=remaining)

    # --- role rules ----------------------------------------------------------------------------------

    async def set_linked_role(self, guild_id: int, role: RoleFacts | None) -> GuildConfig:
        if role is not None:
            _require_role(role)
        return await self._config.update(guild_id, linked_role_id=role.id if role else None)

    async def set_worker_role(
        self, guild_id: int, role: RoleFacts | None, online_only: bool | None = None
    ) -> GuildConfig:
        if role is not None:
            _require_role(role)
        changes: dict[str, Any] = {"worker_role_id": role.id if role else None}
        if online_only is not None:
            changes["worker_online_only"] = online_only
        return await self._config.update(guild_id, **changes)

    async def set_worker_online_only(self, guild_id: int, online_only: bool) -> GuildConfig:
        return await self._config.update(guild_id, worker_online_only=online_only)

    async def set_trusted_role(self, guild_id: int, role: RoleFacts | None) -> GuildConfig:
        if role is not None:
            _require_role(role)
        return await self._config.update(guild_id, trusted_role_id=role.id if role else None)

    async def add_kudos_tier(self, guild_id: int, threshold: int, role: RoleFacts) -> GuildConfig:
        _in_range("The kudos threshold", threshold, 0, MAX_KUDOS_THRESHOLD)
        _require_role(role)
        current = await self._config.get(guild_id)
        others = [t for t in current.kudos_tiers if t.threshold != threshold]
        if any(t.role_id == role.id for t in others):
            raise InvalidInputError(f"{role.label} is already the role of another kudos tier.")
        if len(others) >= self.settings.max_kudos_tiers:
            raise InvalidInputError(f"At most {self.settings.max_kudos_tiers} kudos tiers; remove one first.")
        tiers = sorted([*others, KudosTier(threshold=threshold, role_id=role.id)], key=lambda t: t.threshold)
        return await self._config.update(guild_id, kudos_tiers=tiers)

    async def remove_kudos_tier(self, guild_id: int, threshold: int) -> GuildConfig:
        _in_range("The kudos threshold", threshold, 0, MAX_KUDOS_THRESHOLD)
        current = await self._config.get(guild_id)
        remaining = [t for t in current.kudos_tiers if t.threshold != threshold]
        if len(remaining) == len(current.kudos_tiers):
            raise InvalidInputError(f"There is no kudos tier at {threshold:,} kudos.")
        return await self._config.update(guild_id, kudos_tiers=remaining)

    # --- export / import -----------------------------------------------------------------------------

    async def export(self, guild_id: int) -> bytes:
        config = await self._config.get(guild_id)
        return json.dumps(config.model_dump(mode="json"), indent=2, ensure_ascii=False).encode("utf-8")

    def plan_import(self, data: bytes) -> ImportPlan:
        """Parse an uploaded file; the cog then looks up every channel and role it names."""
        if len(data) > self.settings.max_import_bytes:
            raise InvalidInputError(
                f"The file is too large: at most {self.settings.max_import_bytes:,} bytes."
            )
        config = parse_import(data)
        if len(config.blocked_words) > self.settings.max_blocked_words:
            raise InvalidInputError(f"blocked_words: at most {self.settings.max_blocked_words} terms.")
        for term in config.blocked_words:
            problem = validate_custom_term(term)
            if problem is not None:
                raise InvalidInputError(f"blocked_words: {term[:100]!r}: {problem}")
        if len(config.kudos_emojis) > self.settings.max_kudos_emojis:
            raise InvalidInputError(f"kudos_emojis: at most {self.settings.max_kudos_emojis} emojis.")
        # Keys as reactions are keyed (a hand-edited file may spell the heart with its variation selector).
        emojis = {k if k.isdigit() else emoji_key(k, None): v for k, v in config.kudos_emojis.items()}
        if len(emojis) != len(config.kudos_emojis):
            raise InvalidInputError("kudos_emojis: the same emoji is listed twice.")
        config = config.model_copy(update={"kudos_emojis": emojis})
        for key, amount in config.kudos_emojis.items():
            if not key.isdigit() and not _is_unicode_key(key):
                raise InvalidInputError(f"kudos_emojis: {key[:40]!r} is not an emoji key.")
            if amount > self.settings.max_kudos_emoji_amount:
                raise InvalidInputError(
                    f"kudos_emojis: {key[:40]}: at most {self.settings.max_kudos_emoji_amount:,} kudos."
                )
        if len(config.generation_channels) > self.settings.max_generation_channels:
            raise InvalidInputError(
                f"generation_channels: at most {self.settings.max_generation_channels} channels."
            )
        if len(config.kudos_tiers) > self.settings.max_kudos_tiers:
            raise InvalidInputError(f"kudos_tiers: at most {self.settings.max_kudos_tiers} tiers.")
        _check_consistency(config)
        channels: dict[str, list[int]] = {"generation_channels": list(config.generation_channels)}
        for key in CHANNEL_KEYS:
            value = getattr(config, key)
            channels[key] = [value] if value is not None else []
        roles: dict[str, list[int]] = {"kudos_tiers": [t.role_id for t in config.kudos_tiers]}
        for key in ROLE_KEYS:
            value = getattr(config, key)
            roles[key] = [value] if value is not None else []
        return ImportPlan(config=config, channel_ids=channels, role_ids=roles)

    @staticmethod
    def check_references(
        plan: ImportPlan, channels: Mapping[int, ChannelFacts], roles: Mapping[int, RoleFacts]
    ) -> None:
        """Every channel and role the import names must be usable here; the message names the key."""
        for key, ids in plan.channel_ids.items():
            for channel_id in ids:
                problem = channel_problem(channels.get(channel_id, ChannelFacts(channel_id, None)))
                if problem is not None:
                    raise InvalidInputError(f"Nothing was changed. {key}: {problem}")
        for key, ids in plan.role_ids.items():
            for role_id in ids:
                problem = role_problem(roles.get(role_id, RoleFacts(role_id, None)))
                if problem is not None:
                    raise InvalidInputError(f"Nothing was changed. {key}: {problem}")

    async def apply_import(self, guild_id: int, plan: ImportPlan) -> GuildConfig:
        return await self._config.replace(guild_id, plan.config.model_dump(mode="json"))


def _require_channel(channel: ChannelFacts) -> None:
    problem = channel_problem(channel)
    if problem is not None:
        raise InvalidInputError(problem)


def _require_role(role: RoleFacts) -> None:
    problem = role_problem(role)
    if problem is not None:
        raise InvalidInputError(problem)


def _in_range(label: str, value: int, low: int, high: int) -> None:
    # A whole number first: a client can send text or a float where Discord's would not.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{label} must be a whole number between {low:,} and {high:,}.")
    if not low <= value <= high:
        raise InvalidInputError(f"{label} must be between {low:,} and {high:,} (got {value:,}).")


def _check_consistency(config: GuildConfig) -> None:
    steps, most = config.default_steps, config.max_steps
    if steps is not None and most is not None and steps > most:
        raise InvalidInputError("default_steps: can't be above max_steps.")
    width, height = config.default_width, config.default_height
    if (width is None) != (height is None):
        raise InvalidInputError("default_width / default_height: give both or neither.")
    if width is not None and height is not None and config.max_pixels and width * height > config.max_pixels:
        raise InvalidInputError("default_width × default_height: above max_pixels.")
    roles = [t.role_id for t in config.kudos_tiers]
    if len(set(roles)) != len(roles):
        raise InvalidInputError("kudos_tiers: each tier needs its own role.")
    thresholds = [t.threshold for t in config.kudos_tiers]
    if len(set(thresholds)) != len(thresholds):
        raise InvalidInputError("kudos_tiers: two tiers have the same threshold.")
