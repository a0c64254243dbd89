"""Image generation's limits: where (the server's generation channels), how often (the cooldown) and how
many (jobs in flight per member and per server), with slots reserved while a submission is checked.

A member is refused only for these limits; the Horde's own pace is a line (`bot.services.jobs.engine`).

Several processes on one database (issue #17): a member's servers may be on shards of different processes,
and each process holds its own jobs in memory. So where the database is shared, the caps also count the
member's (and the server's) jobs in flight that other processes hold, and the cooldown starts from the
member's newest job in any process, read from the database just before the check. That early check
refuses at once, before the safety checks and the download; it cannot see a job another process is about
to store. The job's insert checks the caps and the cooldown again, under a database lock per member and
per server (`GenerationJobRepository.create`, `caps`), so of two submissions reaching two processes in the
same instant the second is refused, before anything is sent. On SQLite (one process) the check and the
reservation are one step of the event loop and the insert checks nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from bot.clock import Clock
from bot.db.generation import CapReached, GenerationJob, InFlight, JobCaps
from bot.errors import PermissionDeniedError, RateLimitedError
from bot.services.generation_records import GenerationSettings
from bot.services.guild_config import GuildConfigService
from bot.services.safety import wait_text

NOWHERE_ELSE = InFlight(0, 0, None)


class _Slot(NamedTuple):
    user_id: int
    guild_id: int | None
    cooldown: float  # the member's cooldown where they asked (the server's own, or the default)


def cooldown_refusal(left: float) -> RateLimitedError:
    return RateLimitedError(f"Please wait {wait_text(left)} before your next generation.", retry_after=left)


def member_cap_refusal(count: int, limit: int) -> RateLimitedError:
    return RateLimitedError(
        f"You already have {count} generations in progress (the limit is {limit}). Wait for one to finish."
    )


def server_cap_refusal() -> RateLimitedError:
    return RateLimitedError(
        "This server has too many generations in progress right now. Try again in a minute."
    )


class GenerationLimits:
    def __init__(
        self,
        guild_config: GuildConfigService,
        clock: Clock,
        settings: GenerationSettings,
        in_flight: Callable[[], Iterable[GenerationJob]],
        elsewhere: Callable[[int, int | None, datetime], Awaitable[InFlight]] | None = None,
    ) -> None:
        self._guild_config = guild_config
        self._clock = clock
        self.settings = settings
        self._in_flight = in_flight
        # Jobs in flight (of a member, of a server) held by other processes sharing the database, and the
        # member's newest job since a time; None when this process is the database's only one (SQLite).
        self._elsewhere = elsewhere
        # When each member last sent a generation through this process (monotonic). On SQLite the only
        # record: a restart forgets cooldowns, nothing else. Where the database is shared, the member's
        # newest stored job (wall time) counts too, whichever process stored it.
        self._last_submit: dict[int, float] = {}
        # Slots held by submissions being checked and sent (reservation -> member, guild): they count
        # against the in-flight caps until the job is stored, so simultaneous submissions can't overrun.
        self._reserved: dict[int, _Slot] = {}
        self._next_reservation = 0

    async def reserve(self, *, user_id: int, guild_id: int | None, channel_id: int | None) -> int:
        """The limits (where, how often, how many) and a held slot in one step: two /generate sent at
        once can't both pass a cap.

        Nothing is awaited between the check and the reservation, so no other submission runs in
        between. The slot counts as a job in flight until the job is stored (`release` in the same step)
        or the submission fails."""
        config = await self._guild_config.get(guild_id)
        cooldown = (
            float(config.cooldown_seconds)
            if config.cooldown_seconds is not None
            else self.settings.cooldown_seconds
        )
        elsewhere = NOWHERE_ELSE
        if self._elsewhere is not None:
            since = self._clock.now() - timedelta(seconds=cooldown)
            elsewhere = await self._elsewhere(user_id, guild_id, since)
        # From here on no await: the check and the reservation are atomic for the event loop.
        self._check_now(
            config,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            cooldown=cooldown,
            elsewhere=elsewhere,
        )
        self._next_reservation += 1
        self._reserved[self._next_reservation] = _Slot(user_id, guild_id, cooldown)
        return self._next_reservation

    @contextlib.asynccontextmanager
    async def reserved(
        self, *, user_id: int, guild_id: int | None, channel_id: int | None
    ) -> AsyncIterator[int]:
        """`reserve` for the length of a submission: the slot goes however it ends (a refusal, an error,
        or the job stored, which releases it earlier)."""
        reservation = await self.reserve(user_id=user_id, guild_id=guild_id, channel_id=channel_id)
        try:
            yield reservation
        finally:
            self.release(reservation)

    def release(self, reservation: int | None) -> None:
        if reservation is not None:
            self._reserved.pop(reservation, None)

    def caps(self, reservation: int | None) -> JobCaps | None:
        """What the database checks again as it stores the reserved job (`GenerationJobRepository.create`),
        atomically for every process sharing it; None on a database of one process (SQLite), where the
        reservation already holds."""
        slot = self._reserved.get(reservation) if reservation is not None else None
        if self._elsewhere is None or slot is None:
            return None
        return JobCaps(self.settings.max_per_user, self.settings.max_per_guild, slot.cooldown)

    def refusal(self, reached: CapReached) -> RateLimitedError:
        """What the member is told when the database refused to store their job (`caps`)."""
        if reached.limit == "cooldown":
            return cooldown_refusal(reached.wait_seconds)
        if reached.limit == "member":
            return member_cap_refusal(reached.count, self.settings.max_per_user)
        return server_cap_refusal()

    def started(self, user_id: int) -> None:
        """A generation of this member is stored: its cooldown starts."""
        self._last_submit[user_id] = self._clock.monotonic()
        if len(self._last_submit) > 10000:
            horizon = self._clock.monotonic() - 3600
            self._last_submit = {u: t for u, t in self._last_submit.items() if t > horizon}

    def _check_now(
        self,
        config: Any,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        cooldown: float,
        elsewhere: InFlight = NOWHERE_ELSE,
    ) -> None:
        if (
            guild_id is not None
            and config.generation_channels
            and channel_id not in config.generation_channels
        ):
            shown = ", ".join(f"<#{c}>" for c in config.generation_channels[:5])
            raise PermissionDeniedError(f"Image generation is only available in {shown} on this server.")
        pending = [slot.guild_id for slot in self._reserved.values() if slot.user_id == user_id]
        if pending and cooldown > 0:
            # Another of this member's generations is being sent right now: it starts the cooldown.
            raise cooldown_refusal(cooldown)
        if cooldown > 0:
            left = self._cooldown_left(user_id, cooldown, elsewhere.last_sent)
            if left > 0:
                raise cooldown_refusal(left)
        jobs = list(self._in_flight())
        mine = sum(1 for job in jobs if job.user_id == user_id) + len(pending) + elsewhere.member
        if mine >= self.settings.max_per_user:
            raise member_cap_refusal(mine, self.settings.max_per_user)
        if guild_id is not None:
            theirs = sum(1 for job in jobs if job.guild_id == guild_id)
            theirs += sum(1 for slot in self._reserved.values() if slot.guild_id == guild_id)
            if theirs + elsewhere.server >= self.settings.max_per_guild:
                raise server_cap_refusal()

    def _cooldown_left(self, user_id: int, cooldown: float, stored: datetime | None) -> float:
        """Seconds the member still waits: since their last generation in this process (monotonic), or
        since their newest stored job in any process sharing the database (wall time)."""
        left = 0.0
        last = self._last_submit.get(user_id)
        if last is not None:
            left = cooldown - (self._clock.monotonic() - last)
        if stored is not None:
            left = max(left, cooldown - max(0.0, (self._clock.now() - stored).total_seconds()))
        return left
