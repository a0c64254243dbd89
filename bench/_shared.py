"""Helpers shared by the generation benchmarks (bench/generation.py, bench/burst.py)."""

from __future__ import annotations

import asyncio


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def settle(scheduler: object) -> None:
    """Let the jobs a tick started finish before time moves on (they do real HTTP and SQL)."""
    tasks: set[asyncio.Task[object]] = getattr(scheduler, "_tasks", set())
    for _ in range(2000):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=0.5)
