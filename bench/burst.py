"""Benchmark a burst: `--members` members send /generate within one second, against the fake Horde
enforcing the real server's limits (2 POST /generate/async a second per IP and per key, fixed windows,
`Retry-After: 0` inside the second).

Run from the repository root: ``python bench/burst.py [--members 50]``.

Uses the real `GenerationService` and pacer (SQLite in a temporary folder; HTTP over loopback to the fake
Horde in a process of its own, `bench/_horde_process.py`, as bench/generation.py runs it). The bot's own
per-member and per-server limits are raised, so only the Horde's apply. Time is virtual and shared with the
fake Horde through shared memory (its limiter counts the same seconds); one step is
one scheduler tick. Each request is taken by a worker and finished `--work` virtual seconds after the
Horde accepted it. Prints figures; asserts nothing. The last line is one JSON object:

- `accepted`: requests the bot accepted (none refused for the bot's own pace);
- `refused`: members told no;
- `delivered_once`: requests whose result was handed over exactly once;
- `posts`, `posts_429`: POST /generate/async sent, and how many the Horde's limiter answered 429;
- `max_posts_per_second`: the most POSTs the fake Horde received within any one second;
- `p50_queue_wait_s`, `p99_queue_wait_s`: virtual seconds from /generate to the Horde accepting it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _horde_process import HordeProcess, SharedClock  # noqa: E402  (bench/ is on sys.path: the script's folder)
from _shared import pct, settle  # noqa: E402

from bot.app import build_runtime, build_services  # noqa: E402
from bot.errors import UserFacingError  # noqa: E402
from bot.services.generation import GenerationOutcome  # noqa: E402
from bot.services.generation_options import GenerateOptions  # noqa: E402
from tests.conftest import make_settings  # noqa: E402

BENCH_START = datetime(2026, 1, 1, tzinfo=UTC)


def max_per_second(times: list[float]) -> int:
    """The most events within any window of one second."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def accepted_at(horde: Any) -> dict[str, float]:
    """When the Horde accepted each request (virtual seconds), in the fake's process (`HordeProcess.run`)."""
    return {
        str(call.response["id"]): call.at
        for call in horde.calls_to(r"/generate/async$", "POST")
        if call.status == 202 and isinstance(call.response, dict)
    }


def work(horde: Any, now: float, seconds: float) -> None:
    """The fake Horde's workers, in its process: each request accepted `seconds` ago is finished. One round
    trip a step instead of several per request."""
    accepted = accepted_at(horde)
    for request in list(horde.jobs):
        started = accepted.get(request.id)
        if started is not None and not request.done and now >= started + seconds:
            horde.finish(request.id)


def posts(horde: Any) -> list[tuple[int, float]]:
    """Every POST /generate/async the fake received: (status, virtual seconds), in its process."""
    return [(call.status, call.at) for call in horde.calls_to(r"/generate/async$", "POST")]


async def run(args: argparse.Namespace) -> dict[str, object]:
    clock = SharedClock(t=0.0, start=BENCH_START)
    horde = HordeProcess(clock, attrs={"auto_expire": False})
    horde.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            Path(tmp),
            horde.base_url,
            generation_jobs={"cooldown_seconds": 0, "max_per_user": 10, "max_per_guild": 10000},
            safety={"user_burst": 1000, "guild_burst": 100000, "guild_per_minute": 100000.0},
        )
        services = build_services(build_runtime(settings, clock=clock))
        await services.start()
        gen = services.generation
        deliveries: Counter[int] = Counter()

        async def deliver(outcome: GenerationOutcome) -> int | None:
            deliveries[outcome.job.id] += 1
            return None

        gen.deliver.plug(deliver)
        asked_at: dict[int, float] = {}
        refused: list[str] = []

        async def one(member: int) -> None:
            asked = clock.t
            try:
                submitted = await gen.submit(
                    GenerateOptions(prompt=f"burst image {member}", steps=20),
                    user_id=1000 + member,
                    guild_id=1,
                    channel_id=10,
                    channel_nsfw=False,
                    is_dm=False,
                )
            except UserFacingError as exc:
                refused.append(str(exc))
                return
            asked_at[submitted.job_id] = asked

        # Everyone within one second: a few members every tenth of a second.
        per_step = max(1, args.members // 10)
        member = 0
        while member < args.members:
            batch = range(member, min(args.members, member + per_step))
            member += len(batch)
            await asyncio.gather(*(one(m) for m in batch))
            clock.t += 0.1
        steps = 0
        while len(deliveries) < len(asked_at) and steps < 3600:
            steps += 1
            clock.t = float(int(clock.t) + 1)
            await services.scheduler.tick()
            await settle(services.scheduler)
            await asyncio.to_thread(horde.run, work, clock.t, args.work)
        await services.close()
    sent = horde.run(posts)
    fake_errors = horde.stop()

    accepted_times = sorted(at for status, at in sent if status == 202)
    # Queue wait: the i-th member's request was accepted at the i-th 202 (the line keeps order).
    asked = [asked_at[job] for job in sorted(asked_at)]
    waits = [max(0.0, at - ask) for ask, at in zip(asked, accepted_times, strict=False)]
    figures: dict[str, object] = {
        "members": args.members,
        "accepted": len(asked_at),
        "refused": len(refused),
        "delivered_once": sum(1 for job in asked_at if deliveries.get(job) == 1),
        "posts": len(sent),
        "posts_429": sum(1 for status, _at in sent if status == 429),
        "max_posts_per_second": max_per_second([at for _status, at in sent]),
        "p50_queue_wait_s": round(pct(waits, 0.5), 2),
        "p99_queue_wait_s": round(pct(waits, 0.99), 2),
        "virtual_seconds": round(clock.t, 1),
    }
    if fake_errors:
        print(f"the fake Horde's own errors: {fake_errors}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--work", type=float, default=20.0, help="virtual seconds a worker takes per job")
    figures = asyncio.run(run(parser.parse_args()))
    print(f"{figures['accepted']} of {figures['members']} accepted, {figures['refused']} refused")
    print(
        f"POST /generate/async: {figures['posts']} ({figures['posts_429']} answered 429), "
        f"at most {figures['max_posts_per_second']} within one second"
    )
    print(
        f"queue wait before the Horde accepted (virtual s): p50 {figures['p50_queue_wait_s']}, "
        f"p99 {figures['p99_queue_wait_s']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
