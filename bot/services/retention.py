"""Retention: nothing the bot stores grows forever.

`[retention]` in config.toml gives the days each kind of row is kept (0: forever). A scheduled prune walks
the rules of `bot.db.retention` in small batches, one short transaction each, pausing between batches, so it
never holds the database (or the event loop) for long; interrupted, it carries on at the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.config import RetentionSettings
from bot.db.retention import EXPIRED, RULES, RetentionRepository, Rule
from bot.db.sources import SourceImageStore
from bot.scheduler import Scheduler

log = logging.getLogger(__name__)


DAY_KINDS = (
    "finished_jobs",
    "chat",
    "ratings",
    "rating_images",
    "kudos_ledger",
    "parties",
    "notices",
    "safety_incidents",
    "worker_seen",
    "img2img_sources",
)


@dataclass
class PruneReport:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    pages_freed: int = 0
    complete: bool = True

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class RetentionService:
    def __init__(
        self,
        repo: RetentionRepository,
        sources: SourceImageStore,
        scheduler: Scheduler,
        clock: Clock,
        settings: RetentionSettings,
    ) -> None:
        self._repo = repo
        self._sources = sources
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.last_report: PruneReport | None = None
        self._running = False
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        # The first run waits: start-up work (resumed jobs, the first syncs) goes first.
        self._scheduler.every(
            "retention:prune", self.settings.interval_minutes * 60, self.run, initial_delay=600.0
        )

    async def run(self) -> None:
        report = await self.prune()
        if report.total:
            log.info(
                "retention: deleted %d rows (%s) in %d batches",
                report.total,
                ", ".join(f"{name} {n}" for name, n in report.deleted.items() if n),
                report.batches,
            )

    async def prune(self, *, max_batches: int | None = None) -> PruneReport:
        """Delete what retention allows, batch by batch. `max_batches` stops early (the rest waits for the
        next run); a second call while one runs returns at once."""
        report = PruneReport()
        if self._running:
            report.complete = False
            return report
        self._running = True
        try:
            now = self._clock.now()
            for rule in RULES:
                cutoff = self._cutoff(rule, now)
                if cutoff is None:
                    continue
                if not await self._prune_rule(rule, cutoff, report, max_batches):
                    report.complete = False
                    break
            else:
                evicted = await self._sources.evict_over_bound()
                if evicted:
                    report.deleted["image_sources"] = report.deleted.get("image_sources", 0) + evicted
            report.pages_freed = await self._reclaim()
        finally:
            self._running = False
        self.last_report = report
        return report

    def _cutoff(self, rule: Rule, now: datetime) -> datetime | None:
        """Rows older than this may go (None: this kind is kept forever). Rows carrying their own expiry
        (`EXPIRED`) go once it has passed."""
        if rule.kind == EXPIRED:
            return now
        days = self._days(rule)
        return now - timedelta(days=days) if days else None

    def _days(self, rule: Rule) -> int:
        """How many days the rule's rows are kept: its key's, or a shorter one of `also` (0: forever)."""
        kept = [days for days in map(self.settings.days, (rule.kind, *rule.also)) if days]
        return min(kept, default=0)

    async def _prune_rule(
        self, rule: Rule, cutoff: Any, report: PruneReport, max_batches: int | None
    ) -> bool:
        now = self._clock.now()
        while True:
            if max_batches is not None and report.batches >= max_batches:
                return False
            deleted = await self._repo.prune_batch(rule, cutoff, now, self.settings.batch_size)
            report.batches += 1
            if deleted:
                report.deleted[rule.name] = report.deleted.get(rule.name, 0) + deleted
            if deleted < self.settings.batch_size:
                return True
            # Let everything else run (and other writers take the database) before the next batch.
            await self._clock.sleep(self.settings.batch_pause_seconds)

    async def _reclaim(self) -> int:
        freed = 0
        while True:
            step = await self._repo.reclaim(512)
            freed += step
            if step == 0:
                return freed
            await self._clock.sleep(self.settings.batch_pause_seconds)

    async def over_retention(self) -> dict[str, int]:
        """Rows per table that retention would delete now (0 everywhere right after a full prune)."""
        now = self._clock.now()
        counts: dict[str, int] = {}
        for rule in RULES:
            cutoff = self._cutoff(rule, now)
            if cutoff is not None:
                counts[rule.name] = await self._repo.count(rule, cutoff, now)
        counts["image_sources_over_bound"] = max(
            0, await self._sources.total_bytes() - self.settings.img2img_sources_max_bytes
        )
        return counts
