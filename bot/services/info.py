"""The Horde's public information (models, workers, teams, news, stats, status), cached.

Every call here is public and the same for every member, so answers are kept for a few seconds to minutes
(`[info]` TTL settings): a busy server asking `/models` costs the Horde one request per TTL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Literal

from bot.clock import Clock
from bot.config import InfoSettings
from bot.errors import InvalidInputError, UserFacingError
from bot.horde.cache import TTLCache
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.limits import MAX_NAME_CHARS
from bot.horde.status import (
    ActiveModel,
    Heartbeat,
    ImageTotals,
    Modes,
    Newspiece,
    Performance,
    Team,
    TextTotals,
    Worker,
)
from bot.services import validation

log = logging.getLogger(__name__)
LOOKUP_CHARS = MAX_NAME_CHARS  # a model, worker or team name, as /model, /worker and /team declare it

ModelType = Literal["image", "text"]
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class HordeStats:
    images: ImageTotals
    text: TextTotals
    performance: Performance


@dataclass(frozen=True)
class HordeHealth:
    reachable: bool
    version: str
    modes: Modes | None
    performance: Performance | None


@dataclass(frozen=True)
class TextModelLimits:
    """What every online worker serving a text model accepts (so any of them can take the request)."""

    max_context_length: int
    max_length: int
    workers: int


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value.strip()))


class InfoService:
    def __init__(self, horde: HordeClient, clock: Clock, settings: InfoSettings) -> None:
        self._horde = horde
        self.settings = settings
        self.cache = TTLCache(clock)

    # --- models --------------------------------------------------------------------------------------

    async def models(self, model_type: ModelType = "image", search: str | None = None) -> list[ActiveModel]:
        """Models with at least one active worker, busiest first; `search` filters by name."""
        found = await self.cache.get_or_load(
            f"models:{model_type}", self.settings.models_ttl, lambda: self._horde.models(model_type)
        )
        if search:
            needle = search.strip().casefold()
            found = [m for m in found if needle in m.name.casefold()]
        return sorted(found, key=lambda m: (-m.count, m.name.casefold()))

    async def model_suggestions(
        self, current: str, types: tuple[ModelType, ...] = ("image", "text")
    ) -> list[str]:
        """Model names for autocomplete. Never raises for a down or rate-limiting Horde: suggestions then
        stay empty (the command itself reports the problem when it is run)."""
        names: list[str] = []
        for model_type in types:
            try:
                names += [m.name for m in await self.models(model_type, current or None)]
            except HordeError as exc:
                log.info("no %s model suggestions: the Horde answered %s", model_type, exc.status)
        return names

    async def model(self, name: str) -> ActiveModel:
        """One model by exact (case-insensitive) name, or the only one containing `name`."""
        needle = (validation.text(name, "name", max_chars=LOOKUP_CHARS, single_line=True) or "").casefold()
        if not needle:
            raise InvalidInputError("Give a model name.")
        image, text = await asyncio.gather(self.models("image"), self.models("text"))
        every = image + text
        exact = [m for m in every if m.name.casefold() == needle]
        if exact:
            return exact[0]
        partial = [m for m in every if needle in m.name.casefold()]
        if len(partial) == 1:
            return partial[0]
        if partial:
            names = ", ".join(f"`{m.name}`" for m in partial[:5])
            raise InvalidInputError(f"Several models match: {names}. Give the full name.")
        raise UserFacingError(
            "No worker serves a model by that name right now. `/models` lists the models on offer."
        )

    async def text_model_limits(self, model: str) -> TextModelLimits | None:
        """The context and answer sizes all online workers of `model` accept; None if nobody serves it."""
        workers = await self.workers("text")
        serving = [w for w in workers if w.online and not w.maintenance_mode and model in w.models]
        if not serving:
            return None
        return TextModelLimits(
            max_context_length=min(w.max_context_length or 2048 for w in serving),
            max_length=min(w.max_length or 80 for w in serving),
            workers=len(serving),
        )

    # --- workers and teams ---------------------------------------------------------------------------

    async def workers(self, worker_type: str | None = None) -> list[Worker]:
        return await self.cache.get_or_load(
            f"workers:{worker_type or 'all'}",
            self.settings.workers_ttl,
            lambda: self._horde.workers(worker_type),
        )

    async def worker(self, name_or_id: str) -> Worker:
        query = validation.text(name_or_id, "name_or_id", max_chars=LOOKUP_CHARS, single_line=True)
        if not query:
            raise InvalidInputError("Give a worker name or id.")
        try:
            if is_uuid(query):
                return await self.cache.get_or_load(
                    f"worker:{query.lower()}", self.settings.workers_ttl, lambda: self._horde.worker(query)
                )
            return await self.cache.get_or_load(
                f"worker-name:{query.casefold()}",
                self.settings.workers_ttl,
                lambda: self._horde.worker_by_name(query),
            )
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                raise UserFacingError(
                    "The AI Horde knows no worker by that name or id (workers that stayed offline "
                    "for long are forgotten)."
                ) from None
            raise

    async def teams(self) -> list[Team]:
        return await self.cache.get_or_load("teams", self.settings.teams_ttl, self._horde.teams)

    async def team(self, name_or_id: str) -> Team:
        query = validation.text(name_or_id, "name_or_id", max_chars=LOOKUP_CHARS, single_line=True)
        if not query:
            raise InvalidInputError("Give a team name or id.")
        if is_uuid(query):
            try:
                return await self.cache.get_or_load(
                    f"team:{query.lower()}", self.settings.teams_ttl, lambda: self._horde.team(query)
                )
            except HordeError as exc:
                if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                    raise UserFacingError("The AI Horde knows no team with that id.") from None
                raise
        teams = await self.teams()
        needle = query.casefold()
        exact = [t for t in teams if t.name.casefold() == needle]
        partial = [t for t in teams if needle in t.name.casefold()]
        if exact:
            return exact[0]
        if len(partial) == 1:
            return partial[0]
        if partial:
            names = ", ".join(f"`{t.name}`" for t in partial[:5])
            raise InvalidInputError(f"Several teams match: {names}. Give the full name.")
        raise UserFacingError("The AI Horde knows no team by that name.")

    # --- news, stats, status -------------------------------------------------------------------------

    async def news(self, limit: int = 3) -> list[Newspiece]:
        pieces = await self.cache.get_or_load("news", self.settings.news_ttl, self._horde.news)
        return sorted(pieces, key=lambda n: n.date_published, reverse=True)[:limit]

    async def performance(self) -> Performance:
        return await self.cache.get_or_load("performance", self.settings.stats_ttl, self._horde.performance)

    async def stats(self) -> HordeStats:
        images, text, performance = await asyncio.gather(
            self.cache.get_or_load("stats:img", self.settings.stats_ttl, self._horde.image_totals),
            self.cache.get_or_load("stats:text", self.settings.stats_ttl, self._horde.text_totals),
            self.performance(),
        )
        return HordeStats(images=images, text=text, performance=performance)

    async def health(self) -> HordeHealth:
        """Heartbeat and modes; an unreachable Horde is an answer here, not an error."""
        try:
            beat: Heartbeat = await self.cache.get_or_load(
                "heartbeat", self.settings.status_ttl, self._horde.heartbeat
            )
        except HordeUnavailable:
            return HordeHealth(reachable=False, version="", modes=None, performance=None)
        modes, performance = await asyncio.gather(
            self.cache.get_or_load("modes", self.settings.status_ttl, self._horde.modes),
            self.performance(),
        )
        return HordeHealth(reachable=True, version=beat.version, modes=modes, performance=performance)
