"""What every kind's adapter (`JobAdapter`) does alike to a job this process holds, and what every kind's
outcome says alike, written once: image generations (`bot.services.generation_delivery.ImageJobs`), alchemy
and text (`bot.services.jobs.stored.StoredJobs`) derive from `HeldJobsAdapter`, their outcomes from
`JobOutcome`.

Each change to a held job is one conditional UPDATE of its repository (`bot.db.held_jobs.HeldJobs`); the
adapter returns the job as now stored, or None/False when another process took it over.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from bot.clock import Clock
from bot.db.held_jobs import HeldJobs
from bot.services.jobs.engine import JobRow
from bot.services.jobs.replies import Reply, ReplyTokens, StoredReply
from bot.services.sharedkeys import SharedKeyService

log = logging.getLogger(__name__)


class HeldJob(JobRow, StoredReply, Protocol):
    """A stored job as its adapter and outcome read it: what the engine reads, where it was asked for,
    who paid, and the command's token stored with it."""

    @property
    def channel_id(self) -> int | None: ...
    @property
    def key_source(self) -> str: ...


J = TypeVar("J", bound=HeldJob)
Repo = TypeVar("Repo", bound=HeldJobs)


class HeldJobsAdapter(Generic[J, Repo]):
    """The storage half of a `JobAdapter` that every kind shares: a state stored, a POST cut off by a
    stopped process counted, the hold confirmed before a check, the job held while its result is posted,
    an end without a result held, told and stored (`end`), and the guild key's limits refreshed after it
    paid; the command's interaction token kept with the job
    (`bot.services.jobs.replies`)."""

    name: str

    def __init__(
        self, jobs: Repo, keys: SharedKeyService, clock: Clock, replies: ReplyTokens | None = None
    ) -> None:
        self._jobs = jobs
        self._keys = keys
        self._clock = clock
        self._replies = replies

    async def keep_reply(self, job_id: int, token: str) -> None:
        """The command's interaction token, just received, stored (encrypted) with its job in flight."""
        if self._replies is not None:
            sealed, expires_at = self._replies.seal(token)
            await self._jobs.keep_reply(job_id, sealed, expires_at, self._clock.now())

    def reply(self, job: J) -> Reply | None:
        """The command's token stored with the job, while usable: whichever process delivers the job reads
        and edits the command's reply with it (for the outcome's `reply`)."""
        return self._replies.open(job) if self._replies is not None else None

    async def set_state(self, job: J, state: str) -> J | None:
        if not await self._jobs.set_state(job.id, state, self._clock.now()):
            return None
        return dataclasses.replace(job, state=state)  # type: ignore[type-var]

    async def cut_off(self, job: J) -> J | None:
        if not await self._jobs.cut_off(job.id, self._clock.now()):
            return None
        return dataclasses.replace(  # type: ignore[type-var]
            job, state="queued", interrupted_sends=job.interrupted_sends + 1
        )

    async def hold(self, job: J) -> bool:
        return await self._jobs.hold(job.id, self._clock.now())

    async def ending(self, job: J, state: str, error: str) -> J | None:
        """Held while its member is told it ends without a result, as a result is held while posted
        (`delivering`, with how it ends): a process stopped before the end is stored leaves it for the next
        to tell again, found told rather than told twice. None when another process took the job over."""
        if not await self._jobs.delivering(job.id, self._clock.now(), ending=state, error=error):
            return None
        return dataclasses.replace(job, state="delivering", ending=state, error=error)  # type: ignore[type-var]

    async def delivering(self, job: J) -> bool:
        """Before its result is posted: held (False when another process took the job over)."""
        return await self._jobs.delivering(job.id, self._clock.now())

    async def end(
        self,
        job: J,
        state: str,
        error: str,
        *,
        exception: BaseException | None = None,
        tell: bool = True,
    ) -> None:
        """Finish without results (failed, expired, cancelled): tell the member (without `tell`, the command
        that awaited the job tells it: its own error), store the end. Each kind says how it tells
        (`tell_end`) and what its end stores (`store_end`)."""
        if await self.ending(job, state, error) is None:
            return  # another process took the job over: it tells the member
        message_id = await self.tell_end(job, state, error, exception) if tell else None
        if not await self.store_end(job, state, error, message_id):
            log.info("%s job %s was taken over while its end was told", self.name, job.id)

    async def tell_end(self, job: J, state: str, error: str, exception: BaseException | None) -> int | None:
        """Tell the member how a job ended without a result; the id of the message that says so, for a
        kind that records where its jobs were told (None otherwise)."""
        raise NotImplementedError

    async def store_end(self, job: J, state: str, error: str, message_id: int | None) -> bool:
        """Store the end of a job this process holds (its lease released): False when another process
        took it over."""
        raise NotImplementedError

    async def after_done(self, job: J) -> None:
        """A guild key paid: its cached limits are refreshed."""
        if job.key_source == "guild" and job.guild_id is not None:
            try:
                await self._keys.after_guild_request(job.guild_id)
            except Exception:
                log.exception("%s job %s: guild key refresh failed", self.name, job.id)


@dataclass
class JobOutcome(Generic[J]):
    """The end of a job, for the Discord layer to show: each kind's outcome carries its job as stored
    when the outcome was made."""

    job: J
    # The command's interaction token stored with the job (None: none, or expired): a process other than
    # the one that got the command reads and edits the command's reply with it.
    reply: Reply | None = field(default=None, kw_only=True)

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def user_id(self) -> int:
        return self.job.user_id

    @property
    def guild_id(self) -> int | None:
        return self.job.guild_id

    @property
    def channel_id(self) -> int | None:
        return self.job.channel_id

    @property
    def again(self) -> bool:
        """A process stopped while posting this job's result (found `delivering`): it may be posted
        already (find it, don't post it twice)."""
        return self.job.state == "delivering"
