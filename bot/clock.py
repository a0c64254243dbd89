"""Time, behind one small interface so tests can control it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    # Whether `now()` is this host's own wall clock (what another host's, or the database's, can be
    # compared with), not a clock a test moves.
    host_time: bool

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for intervals and deadlines."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock. `time.monotonic` and `asyncio.sleep` are looked up at call time on purpose:
    the Discord simulator used in tests virtualises both."""

    host_time = True

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
