"""A small time-to-live cache for the Horde's public information calls.

Many members asking `/models` at once must cost the Horde one request: concurrent misses for the same key
share one in-flight load ("single flight"). Failures are not cached. Time comes from the injected clock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.clock import Clock

T = TypeVar("T")


@dataclass
class _Entry:
    expires: float
    value: Any


class TTLCache:
    def __init__(self, clock: Clock, *, max_entries: int = 256) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self.hits = 0
        self.misses = 0

    async def get_or_load(self, key: str, ttl: float, loader: Callable[[], Awaitable[T]]) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self._clock.monotonic():
            self.hits += 1
            self._entries.move_to_end(key)
            value: T = entry.value
            return value
        pending = self._loading.get(key)
        if pending is not None:
            self.hits += 1
            shared: T = await asyncio.shield(pending)
            return shared
        self.misses += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            loaded = await loader()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Nobody else may be waiting: mark the exception retrieved so asyncio does not warn.
            future.exception()
            raise
        else:
            future.set_result(loaded)
            if ttl > 0:
                self._entries[key] = _Entry(self._clock.monotonic() + ttl, loaded)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            return loaded
        finally:
            self._loading.pop(key, None)

    def invalidate(self, key: str | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)
