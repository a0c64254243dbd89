"""What alchemy and text jobs share: both live in the `alchemy_text_jobs` table.

`StoredJobs`, their adapters' base: storage (what every kind does to a held job comes from
`HeldJobsAdapter`, which image jobs share; here the request kept while a job waits in line, the Horde's id
and deadline), how the end of a job without a result is told and stored, the deadline. Each
kind adds its POST, its check, its outcome. `StoredJobService`, their services' base: the engine, the
place in line, Cancel, /logout, resume.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any, Generic, TypeVar

from bot.clock import Clock
from bot.db.alchemy_text_jobs import JobRecord, JobRepository
from bot.errors import PermissionDeniedError, UserFacingError
from bot.hooks import Hook, Port
from bot.horde.alchemy import RequestAccepted
from bot.horde.pacer import Pacer
from bot.scheduler import Scheduler
from bot.services.jobs.engine import (
    REQUEST_LIFETIME,
    Check,
    Flight,
    JobAdapter,
    JobEngine,
    Pace,
    ProgressFn,
)
from bot.services.jobs.held import HeldJobsAdapter
from bot.services.jobs.poller import JobPoller

log = logging.getLogger(__name__)

R = TypeVar("R")


class StoredJobs(HeldJobsAdapter[JobRecord, JobRepository], Generic[R]):
    """The storage half of a `JobAdapter` over `JobRepository` rows of one `kind`."""

    async def active(self) -> list[JobRecord]:
        return await self._jobs.claim_active([self.name], self._clock.now())

    async def park(self, job: JobRecord, request: R) -> R:
        await self._jobs.keep_request(job.id, await self.pending(job, request), self._clock.now())
        return request

    async def unpark(self, job: JobRecord, request: R) -> R:
        return request

    async def pending(self, job: JobRecord, request: R) -> dict[str, Any]:
        """What a restart needs to send the request again (stored while it waits in line)."""
        raise NotImplementedError

    async def submitted(self, job: JobRecord, request: R, accepted: RequestAccepted) -> JobRecord | None:
        sent = self._clock.now()
        deadline = sent + timedelta(seconds=REQUEST_LIFETIME + 60)
        if not await self._jobs.submitted(job.id, accepted.id, sent, deadline):
            return None
        return dataclasses.replace(job, horde_id=accepted.id, state="waiting", deadline_at=deadline)

    def units(self, job: JobRecord) -> int:
        return 1

    async def free_models(self, job: JobRecord) -> tuple[str, ...]:
        return ()

    def past_deadline(self, job: JobRecord) -> bool:
        return self._clock.now() >= job.deadline_at

    async def give_up(self, job: JobRecord, check: Check, flight: Flight) -> tuple[str, str] | None:
        raise NotImplementedError

    async def ended(
        self, job: JobRecord, state: str, *, result: dict[str, Any] | None, error: str | None
    ) -> None:
        """After its result was posted: the end stored (the lease released), the guild key refreshed."""
        if not await self._jobs.finish(job.id, state, self._clock.now(), result=result, error=error):
            # Stalled past its lease while posting: the other process ends it (finding this post).
            log.info("%s job %s was taken over while its result was posted", self.name, job.id)
            return
        await self.after_done(job)

    async def tell_end(
        self, job: JobRecord, state: str, error: str, exception: BaseException | None
    ) -> int | None:
        """Deliver an outcome without a result to the member."""
        outcome = self.outcome_of(job)
        outcome.error = error
        outcome.exception = exception
        await self.hand_over(outcome)
        return None

    async def store_end(self, job: JobRecord, state: str, error: str, message_id: int | None) -> bool:
        return await self._jobs.finish(job.id, state, self._clock.now(), error=error)

    async def told(self, job_id: int) -> None:
        """The job's end was told after its public reply, whose placeholder is removed next
        (`JobRepository.told`)."""
        if not await self._jobs.told(job_id, self._clock.now()):
            log.info("%s job %s was taken over while its end was told", self.name, job_id)

    def outcome_of(self, job: JobRecord) -> Any:
        """The kind's outcome of this job, without a result yet."""
        raise NotImplementedError

    async def hand_over(self, outcome: Any) -> None:
        """The outcome to the Discord layer (through the kind's `deliver` port)."""
        raise NotImplementedError


class StoredJobService(Generic[R]):
    """The service half alchemy and text share: their engine (polled every `poll_interval`, failed polls
    backing off, a slot within 1.5 s waited for by the command itself), a job's place in line, Cancel,
    /logout and resume."""

    def __init__(
        self,
        adapter: JobAdapter[JobRecord, R],
        jobs: JobRepository,
        pacer: Pacer,
        scheduler: Scheduler,
        clock: Clock,
        *,
        poll_interval: float,
        outage_after: int,
        tick: float,
        takeovers: Hook[[], object] | None = None,
    ) -> None:
        self._kind = adapter.name
        self._jobs = jobs
        self.engine: JobEngine[JobRecord, R] = JobEngine(
            adapter,
            pacer,
            scheduler,
            clock,
            Pace(
                min_interval=poll_interval,
                max_interval=60.0,
                outage_after=outage_after,
                inline_wait=1.5,
            ),
            tick=tick,
            takeovers=takeovers,
        )
        # Plugged in by the kind's cog (cog_load/cog_unload): its place in line, outage notices.
        self.show_progress: Port[ProgressFn] = self.engine.show_progress

    @property
    def poller(self) -> JobPoller:
        return self.engine.poller

    def position(self, job_id: int) -> int | None:
        """A job's place in the line of jobs waiting to be sent (1 = next), None once it is sent."""
        return self.engine.position(job_id)

    async def keep_reply(self, job_id: int, token: str) -> None:
        """The command's interaction token, kept with the job (`bot.services.jobs.replies`)."""
        adapter = self.engine.adapter
        assert isinstance(adapter, StoredJobs)
        await adapter.keep_reply(job_id, token)

    async def told(self, job_id: int) -> None:
        """A job's end was told after its public reply, before the reply's placeholder is removed
        (`bot.ui.delivery.show_error_privately`): whoever resumes the job after a stop in between does not
        tell it again."""
        adapter = self.engine.adapter
        assert isinstance(adapter, StoredJobs)
        await adapter.told(job_id)

    async def cancel(self, job_id: int, user_id: int) -> bool:
        """Cancel for the member who asked: out of the line (nothing sent) or DELETE on the Horde.
        False when it was already over."""
        job = self.engine.get(job_id) or await self._jobs.get(job_id)
        if job is None or job.kind != self._kind:
            raise UserFacingError("This request is no longer known to the bot.")
        if job.user_id != user_id:
            raise PermissionDeniedError("Only the member who asked for this can cancel it.")
        return not (await self.engine.cancel(job)).already_finished

    async def forget_member(self, user_id: int) -> None:
        """/logout: the member's jobs in flight stop (best effort on the Horde)."""
        await self.engine.forget_member(user_id)

    def start(self) -> None:
        self.engine.poller.start()

    async def resume(self) -> int:
        """Pick up the jobs of the previous run (`JobEngine.resume`)."""
        return await self.engine.resume()
