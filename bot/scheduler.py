"""The one owner of background work.

Features register periodic jobs (`every`) or one-off calls (`call_later`), and hand fire-and-forget work to
`spawn`. Nothing else in the bot creates long-lived tasks, so shutdown can cancel everything in one place.
The bot drives `tick()` from a single `discord.ext.tasks` loop; tests can drive it with virtual time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock

log = logging.getLogger(__name__)
JobFn = Callable[[], Awaitable[None]]


@dataclass
class _Job:
    name: str
    fn: JobFn
    interval: float | None
    due: float
    running: asyncio.Task[None] | None = None
    cancelled: bool = False


@dataclass
class ScheduledCall:
    """A handle for a `call_later`; `cancel()` it to drop the call if it has not started."""

    _job: _Job = field(repr=False)

    def cancel(self) -> None:
        self._job.cancelled = True


class Scheduler:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._jobs: list[_Job] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def every(self, name: str, interval: float, fn: JobFn, *, initial_delay: float = 0.0) -> ScheduledCall:
        """Run `fn` every `interval` seconds; a run never overlaps the previous one of the same job."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        job = _Job(name, fn, interval, self._clock.monotonic() + initial_delay)
        self._jobs.append(job)
        return ScheduledCall(job)

    def call_later(self, name: str, delay: float, fn: JobFn) -> ScheduledCall:
        job = _Job(name, fn, None, self._clock.monotonic() + max(0.0, delay))
        self._jobs.append(job)
        return ScheduledCall(job)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run `coro` now as a tracked task; its failure is logged, never lost silently."""
        if self._closed:
            coro.close()
            raise RuntimeError("scheduler is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def tick(self) -> None:
        """Start every job that is due. Cheap: called once a second."""
        if self._closed:
            return
        now = self._clock.monotonic()
        keep: list[_Job] = []
        for job in self._jobs:
            if job.cancelled:
                continue
            if job.due <= now and (job.running is None or job.running.done()):
                job.running = self.spawn(self._run(job), name=f"job:{job.name}")
                if job.interval is None:
                    continue
                job.due = now + job.interval
            keep.append(job)
        self._jobs = keep

    async def _run(self, job: _Job) -> None:
        try:
            await job.fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job %s failed", job.name)

    async def close(self) -> None:
        """Cancel every job and task and wait for them to unwind."""
        self._closed = True
        self._jobs.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
