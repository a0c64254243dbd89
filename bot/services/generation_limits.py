"""Image generation's limits: where (the server's generation channels), how often (the cooldown) and how
many (jobs in flight per member and per server), with slots reserved while a submission is checked.

A member is refused only for these limits; the Horde's own pace is a line (`bot.services.jobs.engine`).

Several processes on one database (issue #17): a member's servers may be on shards of different processes,
and each process holds its own jobs in memory. So where the database is shared, the caps also count the
member's (and the server's) jobs in flight that other processes hold, read from the database just before
the check. Two submissions of one member reaching two processes in the same instant can still both pass
(one over the cap at most per process); within a process the check and the reservation stay one step.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from bot.clock import Clock
from bot.db.generation import GenerationJob
from bot.errors import PermissionDeniedError, RateLimitedError
from bot.services.generation_records import GenerationSettings
from bot.services.guild_config import GuildConfigService
from bot.services.safety import wait_text


class GenerationLimits:
    def __init__(
        self,
        guild_config: GuildConfigService,
        clock: Clock,
        settings: GenerationSettings,
        in_flight: Callable[[], Iterable[GenerationJob]],
        elsewhere: Callable[[int, int | None], Awaitable[tuple[int, int]]] | None = None,
    ) -> None:
        self._guild_config = guild_config
        self._clock = clock
        self.settings = settings
        self._in_flight = in_flight
        # Jobs in flight (of a member, of a server) held by other processes sharing the database; None when
        # this process is the database's only one (SQLite).
        self._elsewhere = elsewhere
        # When each member last sent a generation (monotonic; a restart forgets cooldowns, nothing else).
        self._last_submit: dict[int, float] = {}
        # Slots held by submissions being checked and sent (reservation -> member, guild): they count
        # against the in-flight caps until the job is stored, so simultaneous submissions can't overrun.
        self._reserved: dict[int, tuple[int, int | None]] = {}
        self._next_reservation = 0

    async def reserve(self, *, user_id: int, guild_id: int | None, channel_id: int | None) -> int:
        """The limits (where, how often, how many) and a held slot in one step: two /generate sent at
        once can't both pass a cap.

        Nothing is awaited between the check and the reservation, so no other submission runs in
        between. The slot counts as a job in flight until the job is stored (`release` in the same step)
        or the submission fails."""
        config = await self._guild_config.get(guild_id)
        elsewhere = (0, 0) if self._elsewhere is None else await self._elsewhere(user_id, guild_id)
        # From here on no await: the check and the reservation are atomic for the event loop.
        self._check_now(
            config, user_id=user_id, guild_id=guild_id, channel_id=channel_id, elsewhere=elsewhere
        )
        self._next_reservation += 1
        self._reserved[self._next_reservation] = (user_id, guild_id)
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
        elsewhere: tuple[int, int] = (0, 0),
    ) -> None:
        if (
            guild_id is not None
            and config.generation_channels
            and channel_id not in config.generation_channels
        ):
            shown = ", ".join(f"<#{c}>" for c in config.generation_channels[:5])
            raise PermissionDeniedError(f"Image generation is only available in {shown} on this server.")
        cooldown = (
            float(config.cooldown_seconds)
            if config.cooldown_seconds is not None
            else self.settings.cooldown_seconds
        )
        pending = [guild for user, guild in self._reserved.values() if user == user_id]
        if pending and cooldown > 0:
            # Another of this member's generations is being sent right now: it starts the cooldown.
            raise RateLimitedError(
                f"Please wait {wait_text(cooldown)} before your next generation.", retry_after=cooldown
            )
        last = self._last_submit.get(user_id)
        if last is not None and cooldown > 0:
            left = cooldown - (self._clock.monotonic() - last)
            if left > 0:
                raise RateLimitedError(
                    f"Please wait {wait_text(left)} before your next generation.", retry_after=left
                )
        jobs = list(self._in_flight())
        mine = sum(1 for job in jobs if job.user_id == user_id) + len(pending) + elsewhere[0]
        if mine >= self.settings.max_per_user:
            raise RateLimitedError(
                f"You already have {mine} generations in progress "
                f"(the limit is {self.settings.max_per_user}). "
                "Wait for one to finish."
            )
        if guild_id is not None:
            theirs = sum(1 for job in jobs if job.guild_id == guild_id)
            theirs += sum(1 for _, guild in self._reserved.values() if guild == guild_id) + elsewhere[1]
            if theirs >= self.settings.max_per_guild:
                raise RateLimitedError(
                    "This server has too many generations in progress right now. Try again in a minute."
                )
