"""One lifecycle for every kind of Horde job (image generation, alchemy, text), with one adapter per kind.

    queued -> submitting -> waiting -> delivering -> done | partial | failed | cancelled
                  \\-> (a 429) queued again, first in line        waiting -> failed | expired | cancelled
                                                               waiting -> cancelling -> cancelled

A job is stored `queued` by its service, then handed to `JobEngine.start`: sent at once when nobody is in
line and the pacer has a slot (the member waits for the Horde's answer: a refusal is the command's own
error), otherwise it waits in line and the member sees its place ("Waiting to be sent to the AI Horde
(position N)"); one scheduler job sends from the head of the line as fast as the pacer allows. Cancel in
line removes it before any POST. What a restart needs to send a job again is stored before its POST
(`park`), then `submitting`: a restart sends `queued` rows again once, in order. A `submitting` row may
or may not have reached the Horde, which has no idempotency on its creating POSTs and no way to find
one's own requests: it is sent again once, first in line (the member would ask again anyway, for the same
kudos; the first request, if it ran, is nobody's), with the cut-off counted on the row
(`interrupted_sends`); cut off a second time, it is failed with `RESTARTED_WHILE_SENDING`.

Sent jobs are polled by one `JobPoller` at their own pace: the adapter's estimate while the request
moves; while successive checks return the same state with no worker on it, each wait grows by
`backoff_factor` up to `backoff_max`; jobs a worker has taken go first in the check budget. After
`outage_after` failed checks in a row the member is told the Horde isn't answering (and when it answers
again). Past `stuck_notice_after` with no worker, the progress says so. Every state change is shown
through the kind's `show_progress`, throttled to what a member would notice.

Several processes may share one database (issue #17): a job is held by one process at a time (a lease,
`bot.db.leases`). New jobs are held by the process that made them; `resume` takes the jobs nobody else
holds: this process's own after a restart, and, called again by the lease keeper
(`bot.services.leases`), those of a process that stopped renewing. Before each POST, check and DELETE the
adapter confirms the hold (and renews it). A job taken over by another process is dropped from memory
without a word: the other process carries on with it.

A result is posted between two conditional UPDATEs only the holder can make: `delivering` (held), the
post, then the end (state, result message, lease released). A process stopped in between leaves the job
`delivering`: whoever resumes it checks the Horde again (the result is still there, once more), fetches the
result and posts it again, and the Discord layer finds the earlier post instead of making a second (the
job's final message is created with a nonce of the job, which Discord answers with the first message;
a result shown in the progress message is read there): so no result is lost, and none posted twice. An
end without a result (failed before, expired, cancelled, refused by the Horde) goes the same way:
`delivering` with its ending (state and error), told, then finished; a process stopped in between leaves it
for the next, which tells it again as a result is delivered again (found in the command's reply, or by the
job's nonce).

What differs per kind lives in its adapter (`JobAdapter`): how to store a state, send the POST, read a
check, decide to give up, fetch and deliver the outcome, end a job without one. The engine holds no
Discord, Horde-payload or SQL knowledge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from bot.clock import Clock
from bot.db.held_jobs import ACTIVE_STATES
from bot.errors import UserFacingError
from bot.hooks import Hook, Port
from bot.horde.alchemy import RequestAccepted
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.pacer import Kind, Pacer, key_id
from bot.scheduler import ScheduledCall, Scheduler
from bot.services.jobs.poller import JobPoller
from bot.services.sharedkeys import ResolvedKey

log = logging.getLogger(__name__)

REQUEST_LIFETIME = 20 * 60  # the Horde deletes a request 20 min after creation or the last pickup
RESTARTED_WHILE_SENDING = "The bot restarted while sending this request. Please try again."
# A POST cut off by its process stopping is sent again this many times before the job is failed: a process
# that dies in the same moment again (a crash loop on this request?) must not keep creating Horde requests.
RESENDS_AFTER_CUT_OFF = 1
CANCELLED_IN_LINE = "Cancelled before it was sent to the AI Horde: nothing was charged."


class JobRow(Protocol):
    """What the engine reads of a stored job (a frozen dataclass of its repository)."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def guild_id(self) -> int | None: ...
    @property
    def state(self) -> str: ...
    @property
    def horde_id(self) -> str | None: ...
    @property
    def interrupted_sends(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def ending(self) -> str | None: ...


J = TypeVar("J", bound=JobRow)
R = TypeVar("R")


@dataclass(frozen=True)
class Check:
    """One poll's answer, as every kind reports it (text and alchemy have no cheap check: their status
    is the check, kept in `raw` for the outcome)."""

    done: bool = False
    faulted: bool = False
    finished: int = 0
    processing: int = 0
    waiting: int = 0
    restarted: int = 0
    queue_position: int = 0
    wait_time: int = 0
    kudos: float = 0.0
    is_possible: bool = True
    raw: Any = None

    @classmethod
    def of(cls, answer: Any) -> Check:
        """A Horde answer carrying the usual request-status fields (an image check, a text status)."""
        return cls(
            done=answer.done,
            faulted=answer.faulted,
            finished=answer.finished,
            processing=answer.processing,
            waiting=answer.waiting,
            restarted=answer.restarted,
            queue_position=answer.queue_position,
            wait_time=answer.wait_time,
            kudos=answer.kudos,
            is_possible=answer.is_possible,
            raw=answer,
        )

    @property
    def taken(self) -> bool:
        """A worker has it (or has finished some of it)."""
        return bool(self.processing or self.finished)

    @property
    def state(self) -> tuple[object, ...]:
        """What counts as "the request moved" for the back-off (the ETA alone jitters, so it doesn't)."""
        return (
            self.finished,
            self.processing,
            self.waiting,
            self.restarted,
            self.queue_position,
            self.is_possible,
        )


@dataclass(frozen=True)
class Progress:
    """What a job's progress message shows."""

    job: Any
    n: int
    finished: int
    processing: int
    waiting: int
    queue_position: int
    wait_time: int
    kudos: float
    is_possible: bool
    position: int | None = None  # waiting to be sent to the Horde: place in line (the rest is zero)
    waited: float = 0.0  # seconds since the request was sent
    stuck: bool = False  # no worker has taken it for `stuck_notice_after` seconds
    free_models: tuple[str, ...] = ()  # models with idle workers right now (shown when stuck)
    outage: bool = False  # the last `outage_after` checks failed: the Horde isn't answering
    recovered: bool = False  # the first answered check after an outage notice


@dataclass(frozen=True)
class Pace:
    """How one kind's jobs are polled and shown."""

    min_interval: float  # fastest poll of one job (also the pace while a worker has it)
    max_interval: float  # slowest poll of one job (and of failed polls backing off)
    backoff_factor: float = 1.0  # each check returning the same state waits this much longer...
    backoff_max: float = 10.0  # ...up to this
    progress_interval: float = 5.0  # at most one progress edit per job this often
    stuck_notice_after: float = 60.0  # then the member is told no worker has taken the request yet
    outage_after: int = 3  # failed checks in a row before the member is told the Horde isn't answering
    checks_per_second: float | None = None  # bot-wide budget of checks of this kind
    # With nobody in line, a slot this close is waited for by the command itself (the member sees
    # "working on it" a moment later rather than a place in line).
    inline_wait: float = 0.0
    max_concurrent: int = 8  # checks in flight at once


@dataclass
class Flight:
    """What the engine keeps in memory about one job in flight (the database holds the truth)."""

    sent_at: float | None = None  # monotonic: when the Horde accepted it
    sending: bool = False  # the POST has left: Cancel now means DELETE once the Horde answers
    detached: bool = False  # nobody awaits the POST: its failure is shown on the progress message
    last_progress: tuple[float, tuple[object, ...]] | None = None
    trouble_since: float | None = None  # monotonic: since when the adapter sees the job as unservable
    failures: int = 0  # failed checks in a row
    same: tuple[object, ...] | None = None  # the last check's state, for the back-off
    delay: float = 0.0  # the last poll delay


@dataclass(frozen=True)
class Sent:
    """What `JobEngine.start` tells the service: the Horde's answer, or the place in line."""

    job_id: int
    kudos: float = 0.0
    position: int | None = None  # still waiting to be sent: its place in line (1 = next)


@dataclass(frozen=True)
class CancelOutcome:
    already_finished: bool
    state: str


@dataclass(frozen=True)
class _InLine(Generic[J, R]):
    job: J
    request: R
    resolved: ResolvedKey

    @property
    def key(self) -> str:
        return key_id(self.resolved.key.reveal())


class _BackInLine(Exception):
    """The Horde's limiter refused the POST: the job went back to the head of the line."""


class _TakenOver(Exception):
    """Another process holds the job now (this one stalled past its lease): dropped here."""


class JobAdapter(Protocol[J, R]):
    """What one kind of job knows; the engine does the rest. Every method but `post`, `check` and
    `cancel_remote` handles its own errors."""

    kind: Kind  # the pacer's lane
    name: str  # for logs

    # --- storage (the adapter's repository) ---
    async def active(self) -> list[J]:
        """Jobs still in one of `ACTIVE_STATES` that nobody else holds (this process's own after a restart,
        those of a process whose lease ran out), now held by this process, oldest first."""
        ...

    async def set_state(self, job: J, state: str) -> J | None:
        """Store a state of a job this process holds (its lease renewed); None when another process took
        the job over."""
        ...

    async def cut_off(self, job: J) -> J | None:
        """A job found `submitting` with no Horde id (its process stopped while the POST was on its way):
        stored `queued` again with the cut-off counted (`interrupted_sends`); None when another process
        holds it now."""
        ...

    async def hold(self, job: J) -> bool:
        """Before a check or a DELETE: True while this process holds the job (its lease renewed)."""
        ...

    async def park(self, job: J, request: R) -> R:
        """Store what a restart needs to send the job (its request): before it waits in line, or before a
        POST sent at once (a POST cut off by a stopped process is sent again from it). Returns the request
        to keep in memory meanwhile: it may leave out what `unpark` puts back from storage (an img2img
        source of megabytes, for a line that can last minutes)."""
        ...

    async def unpark(self, job: J, request: R) -> R:
        """The request `park` kept, made whole again just before it is sent (raises when it can't)."""
        ...

    async def rebuild(self, job: J) -> tuple[R, ResolvedKey]:
        """After a restart: the parked request and the key to send it with (raises when it can't)."""
        ...

    async def submitted(self, job: J, request: R, accepted: RequestAccepted) -> J | None:
        """The Horde accepted it: store its id (and cost); returns the job as now stored, or None when
        another process took the job over while the POST was on its way."""
        ...

    # --- the Horde ---
    async def post(self, request: R, resolved: ResolvedKey) -> RequestAccepted:
        """The creating POST, its pacer slot already taken (`acquired=True`)."""
        ...

    async def ending(self, job: J, state: str, error: str) -> J | None:
        """Held while its member is told it ends without a result: stored `delivering` with its `ending`
        (and `error`), so a process stopped before the end is stored leaves it to the next, which tells it
        once. Returns the job as now stored, None when another process took it over (it tells)."""
        ...

    async def refused(self, job: J, request: R, resolved: ResolvedKey, exc: HordeError) -> None:
        """The Horde refused the POST (not its limiter): tell safety and the key. The engine stores the
        end (`ending`, then `end`)."""
        ...

    async def check(self, job: J) -> Check: ...

    def estimate(self, check: Check) -> float:
        """The next poll's delay from the Horde's own estimate (the back-off grows from here)."""
        ...

    async def give_up(self, job: J, check: Check, flight: Flight) -> tuple[str, str] | None:
        """(state, message) when this answered check means the job must end now (the engine cancels
        it on the Horde first): no worker can serve it, its deadline passed..."""
        ...

    async def free_models(self, job: J) -> tuple[str, ...]:
        """Models with idle workers, shown to a member whose request no worker has taken."""
        ...

    def units(self, job: J) -> int:
        """How many results were asked for (images)."""
        ...

    # --- the end ---
    async def complete(self, job: J, check: Check) -> float | None:
        """Done or faulted: fetch the results, store `delivering`, deliver, store the end. A job found
        `delivering` (its process stopped while posting) is delivered as one that may have been posted
        already. A delay to try again later, or None."""
        ...

    async def cancel_remote(self, job: J) -> Any:
        """DELETE on the Horde; returns its answer (raises HordeError)."""
        ...

    async def cancelled(self, job: J, answer: Any) -> None:
        """Cancelled on the member's word: deliver what the DELETE's answer holds, store the end."""
        ...

    async def end(
        self,
        job: J,
        state: str,
        error: str,
        *,
        exception: BaseException | None = None,
        tell: bool = True,
    ) -> None:
        """Finish without results (failed, expired, cancelled): tell the member, store the state. Without
        `tell` only stored: the command that awaited the job tells its member itself (its own error)."""
        ...


ProgressFn = Callable[[Progress], Awaitable[None]]
PauseFn = Callable[[], Awaitable[None]]


class JobEngine(Generic[J, R]):
    """The lifecycle of one kind of job: its line, its poller, what is in flight."""

    def __init__(
        self,
        adapter: JobAdapter[J, R],
        pacer: Pacer,
        scheduler: Scheduler,
        clock: Clock,
        pace: Pace,
        *,
        tick: float = 1.0,
        takeovers: Hook[[], object] | None = None,
    ) -> None:
        self.adapter = adapter
        self._pacer = pacer
        self._scheduler = scheduler
        self._clock = clock
        self.pace = pace
        self._tick = tick
        self.poller = JobPoller(
            adapter.name,
            scheduler,
            clock,
            self._poll,
            tick=tick,
            max_concurrent=pace.max_concurrent,
            error_delay=pace.max_interval,
            per_second=pace.checks_per_second,
        )
        self._locks: dict[int, asyncio.Lock] = {}
        # Every job in flight, as stored (this process is the only writer): polls and limits read it
        # instead of the database; the database stays the truth across restarts (`resume`).
        self._active: dict[int, J] = {}
        self._flights: dict[int, Flight] = {}
        # Jobs stored and waiting to be sent, in order: sent from the head as the pacer allows.
        self._line: list[_InLine[J, R]] = []
        self._sender: ScheduledCall | None = None
        # The lease keeper's word that another process's jobs wait for a holder: heard while this engine
        # runs (from its first `resume` to `stop`), answered by resuming them.
        self._takeovers = takeovers
        self._hearing = False
        # Shows a job's progress: plugged in by the kind's cog (cog_load/cog_unload); nothing shown without.
        self.show_progress: Port[ProgressFn] = Port(f"{adapter.name}.show_progress", _no_progress)
        # Raises a UserFacingError while the Horde has the bot's IP timed out: checked before each job in
        # line is sent (the safety service's, plugged in by the factory; nothing paused without).
        self.horde_pause: Port[PauseFn] = Port(f"{adapter.name}.horde_pause", _never_paused)

    # --- what is in flight ----------------------------------------------------------------------------

    def jobs(self) -> Iterator[J]:
        return iter(list(self._active.values()))

    def get(self, job_id: int) -> J | None:
        return self._active.get(job_id)

    def replace(self, job_id: int, **changes: Any) -> None:
        """Keep the cached row in step with a write the service made."""
        job = self._active.get(job_id)
        if job is not None:
            self._active[job_id] = dataclasses.replace(job, **changes)  # type: ignore[type-var]

    def position(self, job_id: int) -> int | None:
        """A job's place in the line of jobs waiting to be sent (1 = next), None once it is sent."""
        for index, entry in enumerate(self._line):
            if entry.job.id == job_id:
                return index + 1
        return None

    def lock(self, job_id: int) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    def forget(self, job_id: int) -> None:
        self._active.pop(job_id, None)
        self.poller.forget(job_id)
        self._flights.pop(job_id, None)
        self._locks.pop(job_id, None)
        self._line = [entry for entry in self._line if entry.job.id != job_id]

    def stop(self) -> None:
        if self._takeovers is not None and self._hearing:
            self._takeovers.unsubscribe(self.resume)
            self._hearing = False
        self.poller.stop()
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None

    # --- sending ------------------------------------------------------------------------------------

    async def start(self, job: J, request: R, resolved: ResolvedKey) -> Sent:
        """A stored (`queued`) job: sent now if nobody is in line and the pacer has a slot (a refusal is
        raised to the caller, as ever), else put in line (its position is returned at once; the Horde's
        answer comes on the progress message)."""
        self._active[job.id] = job
        entry = _InLine(job, request, resolved)
        flight = self._flights.setdefault(job.id, Flight())
        kind = self.adapter.kind
        tried = False
        for _ in range(3):
            if self._line:
                break
            wait = self._pacer.next_free(kind, entry.key)
            if wait > self.pace.inline_wait:
                break
            if wait > 0:
                await self._clock.sleep(wait)
            if self._line or not self._pacer.try_acquire(kind, entry.key):
                break
            if not tried:
                # Kept before the POST: a process stopped while it is on its way is resent from this.
                await self.adapter.park(job, request)
            try:
                return await self._post(entry, requeue=False)
            except _BackInLine:
                tried = True  # the Horde's limiter said no after all (the pacer now holds back)
            except _TakenOver:
                return Sent(job.id)  # the other process sends it and shows its progress
        entry = dataclasses.replace(entry, request=await self.adapter.park(job, request))
        if tried:
            self._line.insert(0, entry)  # it was first: it stays first
        else:
            self._line.append(entry)
        self._start_sender()
        flight.detached = True
        return Sent(job.id, position=self.position(job.id))

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = self._scheduler.every(f"{self.adapter.name}-send", self._tick, self._send_due)

    async def _send_due(self) -> None:
        """One pass of the line: send from its head, in order, as fast as the pacer allows until the next
        pass (a slot due before the next tick is waited for, so the line moves at the Horde's full rate)."""
        sent = False
        kind = self.adapter.kind
        while self._line:
            wait = self._pacer.next_free(kind, self._line[0].key)
            if wait >= self._tick:
                break
            if wait > 0:
                await self._clock.sleep(wait)
                if not self._line:
                    break
            if await self._paused_head():
                sent = True
                continue
            if not self._pacer.try_acquire(kind, self._line[0].key):
                break
            entry = self._line.pop(0)
            sent = True
            try:
                entry = dataclasses.replace(
                    entry, request=await self.adapter.unpark(entry.job, entry.request)
                )
            except Exception as exc:
                self._pacer.landed(kind, entry.key)  # its slot goes unused
                await self._unsendable(entry.job, exc)
                continue
            try:
                await self._post(entry)
            except _BackInLine:
                break
            except (HordeError, _TakenOver):
                continue  # told on the job's own message / the other process's now
        if sent:
            self._line_moved()

    async def _paused_head(self) -> bool:
        """While the Horde has the bot's IP timed out, the job at the head of the line (accepted before the
        pause) is not sent into it: the Horde would refuse it and the pause grow. It is ended, its member
        told what a new command is told (the pause, and when to try again; nothing was charged) rather than
        held: the pause lasts minutes (the Horde's 3, 9, 15, or its own Retry-After), longer than a member
        watches a request that doesn't move and near the 15 minutes its reply can be edited. True when it
        was ended."""
        try:
            await self.horde_pause.get()()
        except UserFacingError as exc:
            entry = self._line.pop(0)
            await self._unsendable(entry.job, exc)
            return True
        return False

    async def _unsendable(
        self, job: J, exc: Exception, fallback: str = "This request could not be sent. Please try again."
    ) -> None:
        """A job that can't be sent any more (its request can't be made whole): failed, and said so (the
        error's own message, else `fallback`)."""
        log.info("%s job %s: can't be sent (%s)", self.adapter.name, job.id, exc)
        self._active.pop(job.id, None)
        await self.adapter.end(job, "failed", getattr(exc, "message", None) or fallback, exception=exc)
        self.forget(job.id)

    async def _post(self, entry: _InLine[J, R], *, requeue: bool = True) -> Sent:
        """Send one job (its slot in the pacer is taken). Stores "submitting" first, so a restart never
        sends a job twice. On the limiter's 429 the job is `queued` again (and, with `requeue`, first in
        line) and `_BackInLine` raised."""
        job, request, resolved = entry.job, entry.request, entry.resolved
        flight = self._flights.setdefault(job.id, Flight())
        flight.sending = True
        live = await self.adapter.set_state(job, "submitting")
        if live is None:
            self._pacer.landed(self.adapter.kind, entry.key)  # its slot goes unused
            self.forget(job.id)
            raise _TakenOver
        if job.id in self._active:
            self._active[job.id] = live
        try:
            accepted = await self.adapter.post(request, resolved)
        except HordeError as exc:
            if exc.is_rate_limit and job.id in self._active:
                # Not processed by the Horde (the pacer now holds back as the 429 said): first in line.
                flight.sending = False
                queued = await self.adapter.set_state(job, "queued")
                if queued is None:
                    self.forget(job.id)
                    raise _TakenOver from exc
                self._active[job.id] = queued
                if requeue:
                    self._line.insert(0, entry)
                    self._start_sender()
                raise _BackInLine from exc
            self._active.pop(job.id, None)
            await self._refused(job, entry, exc, tell=flight.detached)
            self.forget(job.id)
            raise
        stored = await self.adapter.submitted(job, request, accepted)
        if stored is None:
            # Taken over while the POST was on its way (the other process found it cut off and sends it
            # again): the request just made is nobody's, so it is cancelled rather than left to run.
            await self.cancel_quietly(dataclasses.replace(job, horde_id=accepted.id))  # type: ignore[type-var]
            raise _TakenOver
        flight.sent_at = self._clock.monotonic()
        flight.last_progress = None  # "waiting to be sent" gives way to the Horde's queue at the first check
        current = self._active.get(job.id)
        if current is not None:
            if current.state == "cancelling":
                # Cancelled while the POST was on its way: the DELETE goes at the next poll.
                cancelling = await self.adapter.set_state(stored, "cancelling")
                if cancelling is None:
                    self.forget(job.id)
                    raise _TakenOver
                self._active[job.id] = cancelling
                self.poller.track(job.id, 0)
            else:
                self._active[job.id] = stored
                self.poller.track(job.id, self.pace.min_interval)
        self.poller.start()
        log.info(
            "%s job %s submitted for member %s (%s)", self.adapter.name, job.id, job.user_id, resolved.source
        )
        kudos = getattr(stored, "kudos", 0.0)
        return Sent(job.id, kudos=float(kudos or 0.0))

    async def _refused(self, job: J, entry: _InLine[J, R], exc: HordeError, *, tell: bool) -> None:
        """The Horde refused the POST: the end is stored first, as one being told (`ending`), before safety
        and the key hear of it and before the member is told (with `tell`: sent from the line after the
        command returned, the job's message says it; else the command's own error does). A process stopped
        anywhere in between leaves it to the next, which tells it once and never sends the refused request
        again (a refused prompt sent twice would count twice against its member and the bot's IP)."""
        error = error_text(exc)
        if await self.adapter.ending(job, "failed", error) is None:
            return  # another process took the job over (it found the POST cut off): it goes on with it
        await self.adapter.refused(job, entry.request, entry.resolved, exc)
        await self.adapter.end(job, "failed", error, exception=exc, tell=tell)

    def _line_moved(self) -> None:
        """Everyone in line moved up: their progress messages say so (throttled per job)."""
        for index, entry in enumerate(self._line):
            job = self._active.get(entry.job.id)
            if job is not None:
                self._show(job, self._blank(job, position=index + 1))

    # --- cancelling ---------------------------------------------------------------------------------

    async def cancel(self, job: J) -> CancelOutcome:
        """Cancel a job in flight: out of the line (no POST ever sent), or DELETE on the Horde (what was
        finished is delivered). Twice is harmless. The caller checked who may."""
        async with self.lock(job.id):
            current = self._active.get(job.id)
            if current is None or current.state not in ACTIVE_STATES or current.state == "delivering":
                # Finished at the Horde, its result (maybe already posted by a stopped process) on its way.
                return CancelOutcome(True, job.state if job.state not in ACTIVE_STATES else "done")
            if self.position(job.id) is not None:
                self._line = [entry for entry in self._line if entry.job.id != job.id]
                self._line_moved()
                await self.adapter.end(current, "cancelled", CANCELLED_IN_LINE)
                self.forget(job.id)
                return CancelOutcome(False, "cancelled")
            cancelling = await self.adapter.set_state(current, "cancelling")
            if cancelling is None:
                self.forget(job.id)  # another process holds it now: its Cancel is there
                return CancelOutcome(True, current.state)
            current = self._active[job.id] = cancelling
            if current.horde_id is None:
                return CancelOutcome(False, "cancelling")  # the POST is on its way: DELETE once answered
            await self._cancel_locked(current)
        return CancelOutcome(False, "cancelled")

    async def _cancel_locked(self, job: J) -> None:
        self.poller.forget(job.id)
        try:
            answer = await self.adapter.cancel_remote(job)
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                await self.adapter.end(job, "cancelled", "Cancelled.")
                self.forget(job.id)
                return
            # Keep the row "cancelling": the poller tries the DELETE again.
            self.poller.track(job.id, self.pace.min_interval * 2)
            raise
        await self.adapter.cancelled(job, answer)
        self.forget(job.id)

    async def cancel_quietly(self, job: J) -> None:
        """Best effort, for jobs that end without their member (/logout): nothing is delivered."""
        self.forget(job.id)
        if job.horde_id is None:
            return
        try:
            await self.adapter.cancel_remote(job)
        except HordeError as exc:
            log.info("%s job %s: cancel failed: %s", self.adapter.name, job.id, exc)

    async def forget_member(self, user_id: int) -> None:
        """/logout: the member's jobs in flight stop (cancelled on the Horde, best effort)."""
        for job in [j for j in self._active.values() if j.user_id == user_id]:
            await self.cancel_quietly(job)

    # --- resuming -----------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Pick up the jobs nobody else holds (this process's after a restart; a dead process's when the
        lease keeper calls); returns how many are polled or sent again.

        Jobs still waiting to be sent are sent, once, in their order. A job whose POST was on its way when
        its process stopped may or may not have reached the Horde: it is sent again first (it was sent
        before any job in line), once; cut off a second time, it is failed."""
        if self._takeovers is not None and not self._hearing:
            self._takeovers.subscribe(self.resume)
            self._hearing = True
        resumed = 0
        resent: list[_InLine[J, R]] = []
        for job in await self.adapter.active():
            if job.id in self._active:
                continue
            if job.state == "delivering" and job.ending is not None:
                # Ending without a result when its process stopped: told again (found told, not twice).
                await self.adapter.end(job, job.ending, job.error or "")
                continue
            again = job.state == "submitting" and job.horde_id is None
            if again:
                if job.interrupted_sends >= RESENDS_AFTER_CUT_OFF:
                    await self.adapter.end(job, "failed", RESTARTED_WHILE_SENDING)
                    continue
                queued = await self.adapter.cut_off(job)
                if queued is None:
                    continue  # another process holds it now
                log.info(
                    "%s job %s: its POST was cut off by a stop; sending it again", self.adapter.name, job.id
                )
                job = queued
            self._active[job.id] = job
            if job.state == "queued":
                entry = await self._rebuilt(job)
                if entry is None:
                    continue
                (resent if again else self._line).append(entry)
                self._flights[job.id] = Flight(detached=True)
                resumed += 1
                continue
            if job.horde_id is None:
                if job.state == "cancelling":
                    # Cancelled while its POST was on its way, then its process stopped: the member's word
                    # holds (a request that reached the Horde can't be found to be deleted).
                    await self.adapter.end(job, "cancelled", "Cancelled.")
                else:
                    await self.adapter.end(job, "failed", RESTARTED_WHILE_SENDING)
                self.forget(job.id)
                continue
            self._flights.setdefault(job.id, Flight(sent_at=self._clock.monotonic()))
            self.poller.track(job.id, 0)
            resumed += 1
        if resent:
            self._line[0:0] = resent
        if self._line:
            self._start_sender()
        self.poller.start()
        return resumed

    async def _rebuilt(self, job: J) -> _InLine[J, R] | None:
        """A stored job's request and key, to send it again; a job that can't be is failed and said so."""
        try:
            request, resolved = await self.adapter.rebuild(job)
        except Exception as exc:
            await self._unsendable(job, exc, "This request could not be sent after a restart.")
            return None
        return _InLine(job, request, resolved)

    # --- polling ------------------------------------------------------------------------------------

    def next_delay(self, job_id: int, check: Check) -> float:
        """The adapter's estimate while the request moves; while successive checks return the same state
        with no worker on it, each wait is `backoff_factor` longer, up to `backoff_max`; any change
        starts again from the estimate."""
        flight = self._flights.setdefault(job_id, Flight())
        state = check.state
        base = self.adapter.estimate(check)
        if flight.same == state and not check.taken:
            grown = min(self.pace.backoff_max, flight.delay * self.pace.backoff_factor)
            delay = max(base, grown)
        else:
            delay = base
        flight.same, flight.delay = state, delay
        return delay

    async def _poll(self, job_id: int) -> tuple[float, bool] | None:
        async with self.lock(job_id):
            job = self._active.get(job_id)
            if job is None or job.state not in ACTIVE_STATES or job.horde_id is None:
                self.forget(job_id)
                return None
            if not await self.adapter.hold(job):
                log.info("%s job %s: taken over by another process", self.adapter.name, job_id)
                self.forget(job_id)
                return None
            if job.state == "cancelling":
                await self._cancel_locked(job)
                return None
            flight = self._flights.setdefault(job_id, Flight(sent_at=self._clock.monotonic()))
            try:
                check = await self.adapter.check(job)
            except HordeError as exc:
                return await self._poll_failed(job, flight, exc)
            recovered = flight.failures >= self.pace.outage_after
            flight.failures = 0
            if check.done or check.faulted:
                delay = await self.adapter.complete(job, check)
                if delay is None:
                    self.forget(job_id)
                    return None
                return delay, True
            ending = await self.adapter.give_up(job, check, flight)
            if ending is not None:
                await self.cancel_quietly(job)
                await self.adapter.end(job, *ending)
                return None
            if recovered:
                flight.last_progress = None  # the end of the outage notice goes at once
            await self._report(job, flight, check, recovered=recovered)
            return self.next_delay(job_id, check), check.taken

    async def _poll_failed(self, job: J, flight: Flight, exc: HordeError) -> tuple[float, bool] | None:
        if exc.status == 404 and not isinstance(exc, HordeUnavailable):
            await self.adapter.end(
                job,
                "expired",
                "The AI Horde dropped this request: no worker finished it within 20 minutes "
                "(or it expired after a restart). Please try again.",
            )
            self.forget(job.id)
            return None
        if exc.is_rate_limit:
            return max(exc.retry_after or self.pace.min_interval, self.pace.min_interval), False
        flight.failures += 1
        failures = flight.failures
        log.info("%s job %s: check failed (%s); retrying", self.adapter.name, job.id, exc.message)
        waited = self._clock.monotonic() - flight.sent_at if flight.sent_at is not None else 0.0
        if waited > REQUEST_LIFETIME + 600 and failures > 10:
            await self.adapter.end(
                job,
                "failed",
                "The AI Horde could not be reached for too long; this request was given up. "
                "Please try again later.",
            )
            self.forget(job.id)
            return None
        if failures == self.pace.outage_after:
            # The member is told the Horde isn't answering, and that the request is safe.
            flight.last_progress = None
            self._show(job, self._blank(job, waited=waited, outage=True))
        return float(min(self.pace.max_interval, self.pace.min_interval * (2 ** min(failures, 5)))), False

    def _blank(
        self, job: J, *, position: int | None = None, waited: float = 0.0, outage: bool = False
    ) -> Progress:
        kudos = float(getattr(job, "kudos", 0.0) or 0.0)
        return Progress(
            job, self.adapter.units(job), 0, 0, 0, 0, 0, kudos, True, position, waited=waited, outage=outage
        )

    async def _report(self, job: J, flight: Flight, check: Check, *, recovered: bool) -> None:
        """The member's view of a check: counts, queue, ETA, time waited, and past `stuck_notice_after`
        with no worker on it, that none has taken it yet (with the models whose workers are free)."""
        waited = self._clock.monotonic() - flight.sent_at if flight.sent_at is not None else 0.0
        stuck = not check.taken and waited >= self.pace.stuck_notice_after
        free: tuple[str, ...] = ()
        if stuck and self.show_progress.plugged is not None:
            free = await self.adapter.free_models(job)
        self._show(
            job,
            Progress(
                job=job,
                n=self.adapter.units(job),
                finished=check.finished,
                processing=check.processing,
                waiting=check.waiting,
                queue_position=check.queue_position,
                wait_time=check.wait_time,
                kudos=check.kudos or float(getattr(job, "kudos", 0.0) or 0.0),
                is_possible=check.is_possible,
                waited=waited,
                stuck=stuck,
                free_models=free,
                recovered=recovered,
            ),
        )

    def _show(self, job: J, progress: Progress) -> None:
        """Edit the progress message if the member would notice a difference, at most once per
        `progress_interval` per job (an outage notice and its end go at once)."""
        if self.show_progress.plugged is None:
            return
        flight = self._flights.setdefault(job.id, Flight())
        # What a member would notice: counts, queue position, the ETA in 10-second steps, minutes waited.
        shape: tuple[object, ...] = (
            progress.finished,
            progress.processing,
            progress.waiting,
            progress.queue_position,
            progress.wait_time // 10,
            progress.is_possible,
            progress.position,
            int(progress.waited // 60),
            progress.stuck,
            progress.free_models,
            progress.outage,
        )
        now = self._clock.monotonic()
        last = flight.last_progress
        if last is not None and (last[1] == shape or now - last[0] < self.pace.progress_interval):
            return
        flight.last_progress = (now, shape)
        # A progress edit may be rate limited by Discord: never let it hold up polling.
        self._scheduler.spawn(self._progress(progress), name=f"{self.adapter.name}-progress-{job.id}")

    async def _progress(self, progress: Progress) -> None:
        try:
            await self.show_progress.get()(progress)
        except Exception:
            log.info("%s job %s: progress update failed", self.adapter.name, progress.job.id, exc_info=True)


async def _no_progress(progress: Progress) -> None:
    """Nothing shows progress (no Discord layer loaded): the job goes on regardless."""


async def _never_paused() -> None:
    """Nothing says the Horde paused the bot (no safety service wired): jobs in line are sent."""


def error_text(exc: HordeError) -> str:
    """A refusal as stored on the job row."""
    return f"{exc.rc or exc.status}: {exc.message}"[:1000]


__all__ = [
    "ACTIVE_STATES",
    "CancelOutcome",
    "Check",
    "Flight",
    "JobAdapter",
    "JobEngine",
    "Pace",
    "Progress",
    "Sent",
    "error_text",
]
