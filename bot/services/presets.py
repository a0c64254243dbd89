"""Generation presets: a named set of /generate options saved by a member (for themselves) or by a server
admin (for everyone there), applied with `/generate preset:<name>`.

A preset is checked when it is saved, with the same `RequestBuilder` as a generation, so a bad value is
refused then and not at every use. It stores what the member typed (not the built request), so a model's
defaults, the server's limits and later fixes still apply when it is used, and each use is checked again.
Options typed in the command win over the preset's. A member's own preset wins over a server's of the
same name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.clock import Clock
from bot.db.presets import Preset, PresetRepository, Scope
from bot.errors import InvalidInputError, PermissionDeniedError
from bot.services.generation_extras import ExtraOptions
from bot.services.generation_options import GenerateOptions, RequestBuilder

MAX_NAME = 50
MAX_PRESETS = 25  # each of a member's and a server's: one autocomplete page
# What a preset can hold: everything but the prompt and what belongs to one request (the source image and
# what only applies to it, NSFW, privacy).
NOT_SAVED = {"prompt", "nsfw", "private", "strength", "control_type", "extras", "source_processing"}
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerateOptions) if f.name not in NOT_SAVED)
EXTRA_FIELDS = tuple(f.name for f in dataclasses.fields(ExtraOptions) if f.name not in NOT_SAVED)
CHECK_PROMPT = "a preset check"


def options_dict(options: GenerateOptions) -> dict[str, Any]:
    """The saved part of `options`: only what was given."""
    saved: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        value = getattr(options, name)
        if value is not None and str(value).strip():
            saved[name] = value
    for name in EXTRA_FIELDS:
        value = getattr(options.extras, name)
        if value is not None and str(value).strip():
            saved[name] = value
    return saved


def merge(options: GenerateOptions, saved: dict[str, Any]) -> GenerateOptions:
    """`options` with the preset's values where the member typed nothing."""
    base = {name: saved[name] for name in OPTION_FIELDS if name in saved and getattr(options, name) is None}
    extras = {
        name: saved[name] for name in EXTRA_FIELDS if name in saved and getattr(options.extras, name) is None
    }
    return dataclasses.replace(options, **base, extras=dataclasses.replace(options.extras, **extras))


def describe(preset: Preset) -> str:
    """`model: AlbedoBase XL · steps: 25 · loras: Magnagothica=0.8` (shortened for a list line)."""
    text = " · ".join(f"{name}: {value}" for name, value in preset.options.items())
    return text if len(text) <= 180 else text[:179] + "…"


class PresetService:
    def __init__(self, repo: PresetRepository, builder: RequestBuilder, clock: Clock) -> None:
        self._repo = repo
        self._builder = builder
        self._clock = clock

    @staticmethod
    def _owner(scope: Scope, user_id: int, guild_id: int | None, is_admin: bool) -> int:
        if scope == "member":
            return user_id
        if guild_id is None:
            raise InvalidInputError("Server presets are made in a server: run this there.")
        if not is_admin:
            raise PermissionDeniedError("Only members with Manage Server can change this server's presets.")
        return guild_id

    async def save(
        self,
        scope: Scope,
        name: str,
        options: GenerateOptions,
        *,
        user_id: int,
        guild_id: int | None,
        is_admin: bool = False,
        nsfw_allowed: bool = False,
    ) -> bool:
        """Check and store; True if a preset of that name was replaced."""
        owner = self._owner(scope, user_id, guild_id, is_admin)
        clean = " ".join(name.split())
        if not clean or len(clean) > MAX_NAME:
            raise InvalidInputError(f"A preset name is 1 to {MAX_NAME} characters (got {len(clean)}).")
        saved = options_dict(options)
        if not saved:
            raise InvalidInputError(
                "A preset needs at least one option besides its name, e.g. `model` or `loras`."
            )
        # Checked as a generation would be, here and now: a bad value is refused at save, with its message.
        await self._builder.build(
            dataclasses.replace(options, prompt=CHECK_PROMPT),
            guild_id=guild_id,
            nsfw_allowed=nsfw_allowed,
        )
        existing = await self._repo.get(scope, owner, clean)
        if existing is None and await self._repo.count(scope, owner) >= MAX_PRESETS:
            whose = "You have" if scope == "member" else "This server has"
            raise InvalidInputError(
                f"{whose} {MAX_PRESETS} presets already, the most there can be: "
                "delete one with `/preset delete`."
            )
        return await self._repo.save(scope, owner, clean, saved, self._clock.now())

    async def delete(
        self, scope: Scope, name: str, *, user_id: int, guild_id: int | None, is_admin: bool
    ) -> None:
        owner = self._owner(scope, user_id, guild_id, is_admin)
        if not await self._repo.delete(scope, owner, name):
            whose = "You have no" if scope == "member" else "This server has no"
            raise InvalidInputError(f"{whose} preset called `{name.strip()[:MAX_NAME]}`: see `/preset list`.")

    async def listing(self, *, user_id: int, guild_id: int | None) -> tuple[list[Preset], list[Preset]]:
        """(the member's own, the server's)."""
        mine = await self._repo.listing("member", user_id)
        server = await self._repo.listing("guild", guild_id) if guild_id is not None else []
        return mine, server

    async def find(self, name: str, *, user_id: int, guild_id: int | None) -> Preset:
        found = await self._repo.get("member", user_id, name)
        if found is None and guild_id is not None:
            found = await self._repo.get("guild", guild_id, name)
        if found is None:
            raise InvalidInputError(
                f"No preset called `{name.strip()[:MAX_NAME]}`: see `/preset list`, "
                "or save one with `/preset save`."
            )
        return found

    async def apply(
        self, name: str | None, options: GenerateOptions, *, user_id: int, guild_id: int | None
    ) -> GenerateOptions:
        if name is None or not name.strip():
            return options
        preset = await self.find(name, user_id=user_id, guild_id=guild_id)
        return merge(options, preset.options)

    async def choices(self, current: str, *, user_id: int, guild_id: int | None) -> list[tuple[str, str]]:
        """Autocomplete: (label, name), the member's first, then the server's."""
        mine, server = await self.listing(user_id=user_id, guild_id=guild_id)
        needle = current.strip().casefold()
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for preset, whose in [(p, "yours") for p in mine] + [(p, "server") for p in server]:
            key = preset.name.casefold()
            if key in seen or needle not in key:
                continue
            seen.add(key)
            out.append((f"{preset.name} ({whose})"[:100], preset.name))
        return out[:25]

    async def forget_member(self, discord_id: int) -> None:
        await self._repo.forget_member(discord_id)
