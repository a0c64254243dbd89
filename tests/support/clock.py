"""The one controllable clock of the tests and the benchmarks (the bot's `bot.clock.Clock`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
# Bound before the Discord simulator starts, which makes `time.monotonic` virtual for the bot's code.
_real_monotonic = time.monotonic


class SkippedTime:
    """Real time the tests skipped: when the bot waits on a short timer and nothing else (the pacer's second
    between two Horde POSTs), `settle` fires the timer at once instead of waiting for it
    (`tests/support/simcord_adapter.py`). Clocks that follow real time add the seconds skipped, so they
    move as if the wait had been real: `TestClock.following_loop().now()` and `monotonic()` below, the fake
    Horde's default clock in the tests. One total per process; it only grows."""

    seconds = 0.0

    @classmethod
    def add(cls, seconds: float) -> None:
        cls.seconds += seconds

    @classmethod
    def monotonic(cls) -> float:
        """Real monotonic time plus the time skipped (the fake Horde's clock in the tests)."""
        return _real_monotonic() + cls.seconds


class TestClock:
    """Time that moves only when told to.

    `t` is the monotonic time; it moves with `advance(seconds)`, by assigning it, or by a `sleep`, which
    returns at once after moving it (a Retry-After or a back-off costs no real time) and is recorded in
    `slept`. Wall time (`now`) is `start` plus the time moved since, plus any `shift` (wall time alone: a
    day-long window expiring while the scheduler's time stands still).

    `TestClock.following_loop()` is the clock of behaviour tests (`tests/harness.py`): monotonic time and
    sleeps are the event loop's, which the Discord simulator makes virtual (`harness.advance`); wall time is
    the real time (with the waits `settle` skipped, `SkippedTime`) plus any `shift`.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name
    # Its wall time is the test's (started at `start`, or real time plus the time skipped and shifted): not
    # the host's, so the lease keeper doesn't compare it with the database's clock.
    host_time = False

    def __init__(self, *, t: float = 1000.0, start: datetime = DEFAULT_START) -> None:
        self.t = t
        self.start = start
        self.slept: list[float] = []
        self._t0 = t
        self._shifted = timedelta()
        self._follows_loop = False

    @classmethod
    def following_loop(cls) -> TestClock:
        clock = cls()
        clock._follows_loop = True
        return clock

    def now(self) -> datetime:
        if self._follows_loop:
            return datetime.now(UTC) + timedelta(seconds=SkippedTime.seconds) + self._shifted
        return self.start + timedelta(seconds=self.t - self._t0) + self._shifted

    def monotonic(self) -> float:
        # Looked up at call time on purpose: the simulator replaces `time.monotonic` while it runs.
        return time.monotonic() if self._follows_loop else self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self._follows_loop:
            await asyncio.sleep(seconds)
            return
        self.t += max(seconds, 0.0)  # a deadline already passed: no time moves, as with asyncio.sleep
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move monotonic and wall time together (a manual clock only; the simulator moves its own)."""
        if self._follows_loop:
            raise RuntimeError("this clock follows the event loop: use harness.advance()")
        self.t += seconds

    def shift(self, seconds: float) -> None:
        """Move wall time only."""
        self._shifted += timedelta(seconds=seconds)
