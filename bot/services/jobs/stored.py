"""What the adapters of alchemy and text jobs share: both live in the `alchemy_text_jobs` table.

Storage (states, the request kept while a job waits in line, the Horde's id and deadline), the end of a
job without a result (stored, then delivered), and the deadline. Each kind adds its POST, its check, its
outcome.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any, Generic, TypeVar

from bot.clock import Clock
from bot.db.alchemy_text_jobs import JobRecord, JobRepository
from bot.horde.alchemy import RequestAccepted
from bot.services.jobs.engine import REQUEST_LIFETIME, Check, Flight
from bot.services.sharedkeys import SharedKeyService

log = logging.getLogger(__name__)

R = TypeVar("R")


class StoredJobs(Generic[R]):
    """The storage half of a `JobAdapter` over `JobRepository` rows of one `kind`."""

    name: str

    def __init__(self, jobs: JobRepository, keys: SharedKeyService, clock: Clock) -> None:
        self._jobs = jobs
        self._keys = keys
        self._clock = clock

    async def active(self) -> list[JobRecord]:
        return await self._jobs.active([self.name])

    async def set_state(self, job: JobRecord, state: str) -> JobRecord:
        await self._jobs.set_state(job.id, state, self._clock.now())
        return dataclasses.replace(job, state=state)

    async def park(self, job: JobRecord, request: R) -> None:
        await self._jobs.keep_request(job.id, await self.pending(job, request), self._clock.now())

    async def pending(self, job: JobRecord, request: R) -> dict[str, Any]:
        """What a restart needs to send the request again (stored while it waits in line)."""
        raise NotImplementedError

    async def submitted(self, job: JobRecord, request: R, accepted: RequestAccepted) -> JobRecord:
        sent = self._clock.now()
        deadline = sent + timedelta(seconds=REQUEST_LIFETIME + 60)
        await self._jobs.submitted(job.id, accepted.id, sent, deadline)
        return dataclasses.replace(job, horde_id=accepted.id, state="waiting", deadline_at=deadline)

    def units(self, job: JobRecord) -> int:
        return 1

    async def free_models(self, job: JobRecord) -> tuple[str, ...]:
        return ()

    def past_deadline(self, job: JobRecord) -> bool:
        return self._clock.now() >= job.deadline_at

    async def give_up(self, job: JobRecord, check: Check, flight: Flight) -> tuple[str, str] | None:
        raise NotImplementedError

    async def end(
        self,
        job: JobRecord,
        state: str,
        error: str,
        *,
        exception: BaseException | None = None,
        already_stored: bool = False,
    ) -> None:
        if not already_stored:
            await self._jobs.finish(job.id, state, self._clock.now(), error=error)
        await self.tell_failure(job, state, error, exception)

    async def tell_failure(
        self, job: JobRecord, state: str, error: str, exception: BaseException | None
    ) -> None:
        """Deliver an outcome without a result to the member."""
        raise NotImplementedError

    async def after_done(self, job: JobRecord) -> None:
        """A guild key paid: its cached limits are refreshed."""
        if job.key_source == "guild" and job.guild_id is not None:
            try:
                await self._keys.after_guild_request(job.guild_id)
            except Exception:
                log.exception("%s job %s: guild key refresh failed", self.name, job.id)
