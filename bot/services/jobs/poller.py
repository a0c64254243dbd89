"""Polling many Horde requests cheaply: one scheduler job, a next-poll time per request.

`JobPoller` keeps `job id -> due time` in memory. Every `tick` seconds the scheduler runs one pass that
polls the requests that are due (at most `max_concurrent` at a time) and asks each poll for its next
delay, so each request is polled at its own pace (and never more often than its rate limit allows).
There is no task per request and no loop that sleeps: a thousand waiting requests cost one scheduler job.

The job engine (`bot.services.jobs.engine`) owns one per kind of job (with a bot-wide `per_second` budget
for image `check` calls). It has no Horde or Discord knowledge. Within the budget, jobs a worker has taken
(`track(..., urgent=True)`) go before jobs still queued on the Horde: their results are fetched within
moments of being done, while a long queue can wait a tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.scheduler import ScheduledCall, Scheduler

log = logging.getLogger(__name__)

# Poll one job; return the delay before the next poll (with `urgent`: a worker has it), or None when over.
PollFn = Callable[[int], Awaitable[float | tuple[float, bool] | None]]


class JobPoller:
    def __init__(
        self,
        name: str,
        scheduler: Scheduler,
        clock: Clock,
        poll: PollFn,
        *,
        tick: float = 1.0,
        max_concurrent: int = 8,
        error_delay: float = 30.0,
        per_second: float | None = None,
    ) -> None:
        self._name = name
        self._scheduler = scheduler
        self._clock = clock
        self._poll = poll
        self._tick = tick
        self._max_concurrent = max_concurrent
        self._error_delay = error_delay
        self._due: dict[int, float] = {}
        self._urgent: set[int] = set()
        self._handle: ScheduledCall | None = None
        self._started = False
        self.polls = 0
        # Optional bot-wide budget: at most `per_second` polls start per second. Jobs over it stay due and
        # go first in the next pass, so a burst of 500 jobs costs a steady trickle of calls, not 500 at once.
        self.per_second = per_second
        self._credit = 0.0
        self._last: float | None = None

    def start(self) -> None:
        self._started = True
        self._resume_passes()

    def stop(self) -> None:
        self._started = False
        self._pause_passes()

    # While nothing is tracked the scheduler job is off (most of a bot's life, for one kind or another): a
    # pass every tick would only find nothing due. `track` turns it back on; it runs at the next tick, as
    # the pass that would have been running anyway.

    def _resume_passes(self) -> None:
        if self._started and self._handle is None and self._due:
            self._handle = self._scheduler.every(f"{self._name}-poll", self._tick, self.run_due)

    def _pause_passes(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def track(self, job_id: int, delay: float, *, urgent: bool = False) -> None:
        self._due[job_id] = self._clock.monotonic() + max(0.0, delay)
        self._mark(job_id, urgent)
        self._resume_passes()

    def _mark(self, job_id: int, urgent: bool) -> None:
        if urgent:
            self._urgent.add(job_id)
        else:
            self._urgent.discard(job_id)

    def forget(self, job_id: int) -> None:
        self._due.pop(job_id, None)
        self._urgent.discard(job_id)

    @property
    def tracked(self) -> list[int]:
        return sorted(self._due)

    def _budget(self, now: float) -> int | None:
        """Polls this pass may start, or None without a budget."""
        if self.per_second is None:
            return None
        elapsed = self._tick if self._last is None else max(0.0, now - self._last)
        self._last = now
        # Unused budget carries over for at most one second (a short burst, never a flood).
        self._credit = min(self._credit + elapsed * self.per_second, max(1.0, self.per_second))
        return int(self._credit)

    async def run_due(self) -> None:
        """One pass: poll whatever is due (within the budget), oldest due first, bounded concurrency."""
        if not self._due:
            # Nothing tracked: no pass until `track` (the budget earned meanwhile is capped as it was).
            self._pause_passes()
            return
        now = self._clock.monotonic()
        budget = self._budget(now)
        if budget is not None and budget <= 0:
            return
        # Urgent first (a worker has the job), then oldest due first.
        due = sorted(
            (job_id not in self._urgent, when, job_id) for job_id, when in self._due.items() if when <= now
        )[:budget]
        if not due:
            return
        if budget is not None:
            self._credit -= len(due)
        semaphore = asyncio.Semaphore(self._max_concurrent)

        async def one(job_id: int) -> None:
            async with semaphore:
                # Not due any more while it runs: a slow poll must not be started twice.
                self._due[job_id] = float("inf")
                self.polls += 1
                try:
                    delay = await self._poll(job_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: polling job %s failed; trying again later", self._name, job_id)
                    delay = self._error_delay
                if job_id not in self._due:
                    return  # forgotten while polling (cancelled)
                if delay is None:
                    self.forget(job_id)
                elif isinstance(delay, tuple):
                    self._due[job_id] = self._clock.monotonic() + delay[0]
                    self._mark(job_id, delay[1])
                else:
                    self._due[job_id] = self._clock.monotonic() + delay

        await asyncio.gather(*(one(job_id) for _, _, job_id in due))
