"""The image models and styles members can pick in `/generate`, for autocomplete and validation.

Three sources, each cached with `TTLCache` (single flight: many members typing at once cost one request):
- `GET /status/models?type=image`: the models with at least one worker right now (workers, queue, ETA);
- the image model reference (`horde.model_reference_url`): baseline, NSFW tag, description, requirements;
- `GET /styles/image`: the public styles, most used first.

`start()` registers a refresh every `generation.catalog_refresh_seconds` with the scheduler. When a refresh
fails the last good copy is kept and served, and the source is not asked again for
`generation.catalog_retry_seconds`, so a down Horde never makes every keystroke wait for a timeout.
Autocomplete never waits more than `generation.autocomplete_timeout_seconds` (Discord allows 3 s and an
autocomplete cannot be deferred): with nothing cached yet, the first load keeps running in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.clock import Clock
from bot.horde.cache import TTLCache
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.generation import ImageStyle, StyleCollection
from bot.horde.model_reference import NO_CONTROLNET_FAMILIES, ModelReferenceEntry
from bot.horde.status import ActiveModel
from bot.scheduler import ScheduledCall, Scheduler

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CHOICES = 25  # Discord's limit on autocomplete choices
MAX_CHOICE_CHARS = 100  # Discord's limit on a choice's name and value
CATEGORY_PREFIX = "category:"  # a `style` value naming a style collection: one of its styles, at random


@dataclass(frozen=True)
class CatalogModel:
    """An image model with workers right now, enriched from the model reference when it is listed there."""

    name: str
    workers: int
    queued: int  # jobs waiting for this model
    eta: int  # seconds, the Horde's estimate for the queue
    performance: float = 0.0
    baseline: str | None = None  # short label: "SD 1.5", "SDXL", "Flux"...
    nsfw: bool = False
    description: str | None = None
    in_reference: bool = False
    native_size: int | None = None  # the family's native square side (512, 768, 1024)
    clip_skip: int | None = None  # the reference's requirement, if any
    unsupported: tuple[
        str, ...
    ] = ()  # the reference's `features_not_supported`: "hires_fix", "controlnet"...
    inpainting: bool = False  # an inpainting model (the only kind that takes a mask)
    # The reference's `requirements` beyond clip_skip: the steps, CFG and samplers the model works with.
    min_steps: int | None = None
    max_steps: int | None = None
    min_cfg: float | None = None
    max_cfg: float | None = None
    samplers: tuple[str, ...] = ()

    @property
    def supports_controlnet(self) -> bool:
        return "controlnet" not in self.unsupported and self.baseline not in NO_CONTROLNET_FAMILIES

    @property
    def supports_hires_fix(self) -> bool:
        return "hires_fix" not in self.unsupported


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _rank(name: str, needle: str) -> int | None:
    """0 exact, 1 prefix, 2 a word starts with it, 3 anywhere; None: no match."""
    folded = name.casefold()
    if not needle:
        return 3
    if folded == needle:
        return 0
    if folded.startswith(needle):
        return 1
    position = folded.find(needle)
    if position < 0:
        return None
    return 2 if not folded[position - 1].isalnum() else 3


def model_label(model: CatalogModel) -> str:
    """`AlbedoBase XL · SDXL · 12 workers · 3 queued · ETA 40s`, at most 100 characters."""
    parts = []
    if model.baseline:
        parts.append(model.baseline)
    if model.nsfw:
        parts.append("NSFW")
    parts.append(_plural(model.workers, "worker"))
    parts.append(f"{model.queued} queued")
    if model.queued:
        parts.append(f"ETA {model.eta}s")
    suffix = " · " + " · ".join(parts)
    return _shorten(model.name, MAX_CHOICE_CHARS - len(suffix)) + suffix


def style_label(style: ImageStyle) -> str:
    label = style.name + (" (NSFW)" if style.nsfw else "")
    if style.info:
        label += f" — {' '.join(style.info.split())}"
    return _shorten(label, MAX_CHOICE_CHARS)


class CatalogSettings(Protocol):
    """What the catalog reads of `[generation]` (`GenerationDefaults`). Named here, so that this module does
    not import `generation_options`, which imports it."""

    @property
    def catalog_refresh_seconds(self) -> float: ...
    @property
    def catalog_retry_seconds(self) -> float: ...
    @property
    def reference_refresh_seconds(self) -> float: ...
    @property
    def autocomplete_timeout_seconds(self) -> float: ...
    @property
    def style_pages(self) -> int: ...


class ModelCatalog:
    def __init__(
        self,
        horde: HordeClient,
        scheduler: Scheduler,
        clock: Clock,
        settings: CatalogSettings,
        reference_url: str,
    ) -> None:
        self._horde = horde
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self._reference_url = reference_url
        self.cache = TTLCache(clock)
        # Last good answer of each source, served when a refresh fails; and when each may be asked again.
        self._last: dict[str, object] = {}
        self._fetched_at: dict[str, float] = {}
        self._failed_until: dict[str, float] = {}
        self._refresh_job: ScheduledCall | None = None
        self._background: dict[str, asyncio.Task[None]] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Refresh now and then every `catalog_refresh_seconds` (idempotent; call from the cog's load)."""
        if self._refresh_job is None:
            self._refresh_job = self._scheduler.every(
                "generation:catalog", self.settings.catalog_refresh_seconds, self.refresh
            )

    async def refresh(self) -> None:
        """Fetch models and styles again (and the reference when it is due); failures keep the last copy."""
        self.cache.invalidate("models")
        self.cache.invalidate("styles")
        self._failed_until.pop("models", None)
        self._failed_until.pop("styles", None)
        results = await asyncio.gather(
            self._active_models(), self._styles(), self._reference(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, HordeError):
                raise result

    # --- sources -----------------------------------------------------------------------------------------

    async def _source(self, key: str, ttl: float, loader: Callable[[], Awaitable[T]]) -> T:
        """One source through the TTL cache; on failure the last good copy, else the error."""
        last = self._last.get(key)
        if self._failed_until.get(key, 0.0) > self._clock.monotonic():
            if last is not None:
                return last  # type: ignore[return-value]
            raise HordeUnavailable("The AI Horde's model list is unavailable right now")
        try:
            value = await self.cache.get_or_load(key, ttl, loader)
        except HordeError as exc:
            self._failed_until[key] = self._clock.monotonic() + self.settings.catalog_retry_seconds
            log.warning(
                "catalog: %s unavailable (%s); %s", key, exc.message, "stale copy kept" if last else "none"
            )
            if last is not None:
                return last  # type: ignore[return-value]
            raise
        if value is not last:
            self._last[key] = value
            self._fetched_at[key] = self._clock.monotonic()
            self._failed_until.pop(key, None)
        return value

    async def _active_models(self) -> list[ActiveModel]:
        return await self._source(
            "models", self.settings.catalog_refresh_seconds, lambda: self._horde.models("image")
        )

    async def _load_styles(self) -> list[ImageStyle]:
        styles: list[ImageStyle] = []
        for page in range(1, self.settings.style_pages + 1):
            found = await self._horde.image_styles_page(page)
            styles.extend(found)
            if len(found) < 25:  # the Horde's page size: a short page is the last one
                break
        return styles

    async def _styles(self) -> list[ImageStyle]:
        return await self._source("styles", self.settings.catalog_refresh_seconds, self._load_styles)

    async def _collections(self) -> list[StyleCollection]:
        return await self._source(
            "collections", self.settings.catalog_refresh_seconds, self._horde.image_collections
        )

    async def _reference(self) -> dict[str, ModelReferenceEntry]:
        return await self._source(
            "reference",
            self.settings.reference_refresh_seconds,
            lambda: self._horde.image_model_reference(self._reference_url),
        )

    async def _bounded(self, key: str, load: Callable[[], Awaitable[T]]) -> T | None:
        """`load()` if it answers within the autocomplete timeout, else None (it goes on in the background).

        Stale copies are returned at once and refreshed in the background.
        """
        last = self._last.get(key)
        fresh = self._clock.monotonic() - self._fetched_at.get(key, -1e18) < self._ttl(key)
        if last is not None and (fresh or key in self._background):
            return last  # type: ignore[return-value]
        task = self._background.get(key)
        if task is None:
            task = self._scheduler.spawn(self._quietly(key, load), name=f"catalog:{key}")
            self._background[key] = task
        if last is not None:
            return last  # type: ignore[return-value]
        try:
            await asyncio.wait_for(asyncio.shield(task), self.settings.autocomplete_timeout_seconds)
        except TimeoutError:
            return None
        value = self._last.get(key)
        return value  # type: ignore[return-value]

    async def _quietly(self, key: str, load: Callable[[], Awaitable[object]]) -> None:
        try:
            await load()
        except HordeError:
            pass  # logged by _source; the last copy (if any) stays
        finally:
            self._background.pop(key, None)

    def _ttl(self, key: str) -> float:
        if key == "reference":  # collections refresh with the models and styles
            return self.settings.reference_refresh_seconds
        return self.settings.catalog_refresh_seconds

    def _enrich(
        self, active: list[ActiveModel], reference: dict[str, ModelReferenceEntry] | None
    ) -> list[CatalogModel]:
        models = []
        for model in active:
            entry = (reference or {}).get(model.name.casefold())
            models.append(
                CatalogModel(
                    name=model.name,
                    workers=model.count,
                    queued=round(model.jobs),
                    eta=model.eta,
                    performance=model.performance,
                    baseline=entry.baseline_label if entry else None,
                    nsfw=entry.nsfw if entry else False,
                    description=(entry.description or None) if entry else None,
                    in_reference=entry is not None,
                    native_size=entry.native_size if entry else None,
                    clip_skip=entry.clip_skip if entry else None,
                    unsupported=tuple(entry.features_not_supported) if entry else (),
                    inpainting=entry.inpainting if entry else False,
                    min_steps=entry.min_steps if entry else None,
                    max_steps=entry.max_steps if entry else None,
                    min_cfg=entry.cfg_range[0] if entry else None,
                    max_cfg=entry.cfg_range[1] if entry else None,
                    samplers=entry.samplers if entry else (),
                )
            )
        return sorted(models, key=lambda m: (-m.workers, m.queued, m.name.casefold()))

    # --- public ------------------------------------------------------------------------------------------

    async def models(self) -> list[CatalogModel]:
        """Models with workers now, busiest first. Raises HordeError if the Horde never answered yet."""
        active = await self._active_models()
        # The reference lives elsewhere (GitHub): wait for it only briefly, enrichment can come later.
        reference = await self._bounded("reference", self._reference)
        return self._enrich(active, reference)

    async def styles(self) -> list[ImageStyle]:
        """Public image styles, most used first. Raises HordeError if the Horde never answered yet."""
        return await self._styles()

    async def reference_entry(self, name: str) -> ModelReferenceEntry | None:
        """What the model reference says about `name` (also models nobody serves now); None if unknown."""
        reference = await self._bounded("reference", self._reference)
        return (reference or {}).get(name.strip().casefold())

    async def find_model(self, name: str) -> CatalogModel | None:
        """The served model called `name` (case-insensitive); None if no worker serves it.

        Raises HordeError when the model list is unavailable (so callers can tell "unknown" from "can't say").
        """
        needle = name.strip().casefold()
        for model in await self.models():
            if model.name.casefold() == needle:
                return model
        return None

    async def find_style(self, name: str) -> ImageStyle | None:
        """A style by id, name (case-insensitive; the most used of namesakes) or `creator::style::name`.

        Raises HordeError when the style list is unavailable.
        """
        wanted = name.strip()
        folded = wanted.casefold()
        styles = await self.styles()
        for style in styles:
            if style.id and style.id == wanted:
                return style
        for style in styles:
            if style.name.casefold() == folded:
                return style
        for style in styles:
            if style.creator and f"{style.creator}::style::{style.name}".casefold() == folded:
                return style
        return None

    async def model_choices(self, current: str, *, nsfw_allowed: bool) -> list[tuple[str, str]]:
        """Up to 25 (label, value) autocomplete choices; best match first, then most workers, shortest queue.

        Models tagged NSFW in the reference are left out where NSFW is not allowed. Never waits long: with
        no list yet the typed text is offered back as is.
        """
        active = await self._bounded("models", self._active_models)
        typed = current.strip()
        if active is None:
            if not typed:
                return []
            return [
                (_shorten(f"{typed} (model list unavailable)", MAX_CHOICE_CHARS), typed[:MAX_CHOICE_CHARS])
            ]
        reference = await self._bounded("reference", self._reference)
        needle = typed.casefold()
        ranked: list[tuple[int, CatalogModel]] = []
        for model in self._enrich(active, reference):
            if len(model.name) > MAX_CHOICE_CHARS or (model.nsfw and not nsfw_allowed):
                continue
            rank = _rank(model.name, needle)
            if rank is not None:
                ranked.append((rank, model))
        ranked.sort(key=lambda item: (item[0], -item[1].workers, item[1].queued, item[1].name.casefold()))
        return [(model_label(model), model.name) for _, model in ranked[:MAX_CHOICES]]

    async def find_collection(self, name: str) -> StyleCollection | None:
        """A style category (the Horde's style collection) by id or name (case-insensitive).

        Raises HordeError when the collection list is unavailable.
        """
        wanted = name.strip()
        for collection in await self._collections():
            if collection.id == wanted or collection.name.casefold() == wanted.casefold():
                return collection
        return None

    async def category_choices(self, current: str) -> list[tuple[str, str]]:
        """Style categories for the `style` autocomplete: `category:<name>` picks one of its styles."""
        collections = await self._bounded("collections", self._collections)
        needle = current.strip().casefold().removeprefix("category:").strip()
        out: list[tuple[str, str]] = []
        for collection in collections or []:
            value = f"{CATEGORY_PREFIX}{collection.name}"
            if (
                not collection.styles
                or len(value) > MAX_CHOICE_CHARS
                or _rank(collection.name, needle) is None
            ):
                continue
            label = (
                f"Category: {collection.name} (a random one of {_plural(len(collection.styles), 'style')})"
            )
            out.append((_shorten(label, MAX_CHOICE_CHARS), value))
        return out[:MAX_CHOICES]

    async def style_choices(self, current: str) -> list[tuple[str, str]]:
        """Up to 25 (label, value) choices, best match first, then most used; the value is the style's id."""
        styles = await self._bounded("styles", self._styles)
        if not styles:
            return []
        needle = current.strip().casefold()
        ranked: list[tuple[int, int, ImageStyle]] = []
        for position, style in enumerate(styles):
            value = style.id or style.name
            if not value or len(value) > MAX_CHOICE_CHARS:
                continue
            rank = _rank(style.name, needle)
            if rank is not None:
                ranked.append((rank, position, style))
        ranked.sort(key=lambda item: (item[0], -item[2].use_count, item[1]))
        return [(style_label(style), style.id or style.name) for _, _, style in ranked[:MAX_CHOICES]]
