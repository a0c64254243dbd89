"""Time, behind one small interface so tests can control it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for intervals and deadlines."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock. `time.monotonic` and `asyncio.sleep` are looked up at call time on purpose:
    the Discord simulator used in tests virtualises both."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def shift(self, seconds: float) -> None:
        """Move wall-clock time forward (tests: expiry of day-long windows without waiting)."""
        self._offset += timedelta(seconds=seconds)
