"""Benchmark image generation: N generations in flight at once in one process, against the fake Horde.

Run from the repository root: ``python bench/generation.py [--jobs 500] [--checks-per-second 20]``.

Uses the real `GenerationService` (database: SQLite in a temporary folder; Horde client over loopback HTTP
to the fake Horde in a process of its own, `bench/_horde_process.py`, so its request handling neither takes
the GIL from the bot's event loop nor counts in the bot's RSS). Discord is replaced by a delivery hook that
records when each result would be posted. Time is virtual (one step = one scheduler tick of 1 s) so
simulated queues of minutes run in seconds; HTTP, database and CPU costs are real. Prints figures; asserts
nothing.

Simulated queue: jobs are submitted over the first `--ramp` virtual seconds (so new interactions arrive
while the others are being polled); each is taken by a worker and finished at a random time between
`--min-wait` and `--max-wait` virtual seconds after submission; `queue_position`/`wait_time` count down.

Figures:
- interaction -> defer: what runs before a /generate handler's first statement (`defer`): the event
  loop's wait while every other job is polled, plus the tree's safety gate (`SafetyService.gate`).
- submit: the member's wait after the defer until the progress message (checks, DB row, POST).
- Horde calls per generation: `GET /generate/check` and `GET /generate/status`, counted by the fake.
- delivery delay: virtual seconds from the fake marking a job done to the delivery hook being called.
- peak memory: the process's max RSS (the bot alone: the fake Horde is another process). The Python heap
  peak only with `--heap`: tracemalloc slows every allocation (stretching the loop's stalls) and adds its
  own memory to the RSS, so with it the other figures are not comparable run to run. No issue figure
  needs the heap; it helps tell Python objects from native buffers when RSS is the question.
- stuck jobs: `--stuck` of the jobs replay the real Horde's state with no worker free (`wait_time 0`,
  `queue_position 1`, unchanged) for `--stuck-for` virtual seconds before a worker takes them; their checks
  per minute after their first minute are `stuck_checks_per_minute`.

img2img: `--img2img` of the jobs (ten by default, spread over the ramp) carry a 3072² source image, which
the bot converts to WebP as it would a member's upload (about 2 s of CPU each). `loop_stall_max_ms` is the
longest the event loop was unavailable (a 2 ms sleep's overshoot) while any of them was being converted:
Pillow runs in a worker thread, so the loop keeps answering. On a loaded machine a stall is also the time
the OS ran other processes: for stalls over 50 ms two lines say how much CPU the loop's thread and the
whole process ran in them.

POSTs go through the bot's pacer (2 a second): jobs wait in line to be sent, never refused. The last line
is one JSON object: `status_calls_per_job`, `checks_per_job` (beside `mean_wait_s`, the mean simulated
wait), `stuck_checks_per_minute`, `delivery_p99_s` (virtual), `peak_rss_mib`, `refused`, and the figures
of the interaction path.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _horde_process import HordeProcess, SharedClock  # noqa: E402  (bench/ is on sys.path: the script's folder)
from _shared import pct, settle  # noqa: E402

from bot.app import build_runtime, build_services, freeze_startup_heap  # noqa: E402
from bot.errors import UserFacingError  # noqa: E402
from bot.malloc import limit_arenas  # noqa: E402
from bot.services.generation import GenerationOutcome  # noqa: E402
from bot.services.generation_options import GenerateOptions  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402

BENCH_START = datetime(2026, 1, 1, tzinfo=UTC)


def source_image(_horde: Any = None) -> bytes:
    """A 3072² JPEG (gradients and noise, ~3 MB): the largest source the Horde accepts.

    Made in the fake Horde's process (`HordeProcess.run`): a member's upload reaches the bot as bytes from
    Discord's CDN, and drawing it here peaked at +64 MiB, counted in the bot's RSS."""
    side = 3072
    image = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((side, side)),
            Image.effect_noise((side, side), 12),
            Image.radial_gradient("L").resize((side, side)),
        ],
    )
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


# The fake Horde's workers, in the fake's process (`HordeProcess.run`): request id -> (a worker takes it at,
# finishes it at, stuck until taken). One round trip a tick instead of one per request.
_WORKERS: dict[str, tuple[float, float, bool]] = {}


def work(horde: Any, now: float, planned: dict[str, tuple[float, float, bool]]) -> list[str]:
    """Start and finish what is due `now`; count the others' queue down. Returns the requests finished."""
    _WORKERS.update(planned)
    finished = []
    for horde_id, (start, finish, stuck) in list(_WORKERS.items()):
        if now >= finish:
            horde.finish(horde_id)
            finished.append(horde_id)
            del _WORKERS[horde_id]
        elif now >= start:
            if horde.image_request(horde_id).waiting:
                horde.start_processing(horde_id)
        elif stuck:
            horde.set_queue(horde_id, 1, wait_time=0)  # no worker free: the real Horde says this
        else:
            left = int(finish - now)
            horde.set_queue(horde_id, max(1, left // 10), wait_time=left)
    return finished


def check_times(horde: Any, horde_ids: list[str]) -> dict[str, list[float]]:
    """When each request was checked (virtual seconds), in the fake's process."""
    return {h: [c.at for c in horde.calls_to(rf"/generate/check/{h}$", "GET")] for h in horde_ids}


def stall_line(when: str, stalls: list[tuple[float, float, float]]) -> str:
    """Whose time the loop's stalls were: its own thread's CPU (the bot's callbacks), the process's (its
    other threads too), or neither (the OS ran other processes: a loaded machine)."""
    if not stalls:
        return f"loop stalls over 50 ms {when}: none"
    (wall, loop, process), most = max(stalls), max(stalls, key=lambda s: s[1])
    return (
        f"loop stalls over 50 ms {when}: {len(stalls)}; the longest {wall * 1000:.0f} ms, in which the "
        f"loop's thread ran {loop * 1000:.0f} ms of CPU and the process {process * 1000:.0f} ms; the most "
        f"the loop's thread ran in one: {most[1] * 1000:.0f} ms of {most[0] * 1000:.0f} (the rest: other "
        "threads, the OS)"
    )


async def run(args: argparse.Namespace) -> None:
    limit_arenas()  # as run.py does, before the bot's threads start
    rng = random.Random(args.seed)
    # The fake counts the same virtual seconds (its limiter as the real server's, and call times).
    clock = SharedClock(t=0.0, start=BENCH_START)
    horde = HordeProcess(clock, attrs={"auto_expire": False})
    horde.start()
    if args.heap:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            Path(tmp),
            horde.base_url,
            generation_jobs={
                "cooldown_seconds": 0,
                "max_per_user": 10,
                "max_per_guild": 10000,
                "checks_per_second": args.checks_per_second,
            },
            safety={"user_burst": 1000, "guild_burst": 100000, "guild_per_minute": 100000.0},
        )
        services = build_services(build_runtime(settings, clock=clock))
        await services.start()
        freeze_startup_heap()  # as run.py does once the services have started
        gen = services.generation
        delivered_at: dict[int, float] = {}

        async def deliver(outcome: GenerationOutcome) -> int | None:
            delivered_at[outcome.job.id] = clock.t
            return None

        gen.deliver.plug(deliver)
        # job id -> (horde id, start processing at, done at), once the Horde accepted it
        plan: dict[int, tuple[str, float, float]] = {}
        by_horde_id: dict[str, int] = {}
        unplanned: dict[int, float] = {}  # job id -> its simulated wait, until it is sent
        stuck: set[int] = set()
        refused: list[str] = []
        done_at: dict[int, float] = {}
        waited: dict[int, float] = {}
        defer_times: list[float] = []
        gate_times: list[float] = []
        submit_times: list[float] = []
        lags: list[float] = []
        stall_lags: list[float] = []  # the same, while an img2img source is being converted
        # Each stall over 50 ms (while converting, and at any time): its length, the CPU the loop's own
        # thread ran meanwhile, and the CPU of the whole process (its other threads: Pillow, SQLite).
        stall_cpu: list[tuple[float, float, float]] = []
        lag_cpu: list[tuple[float, float, float]] = []
        converting = 0
        source = horde.run(source_image)
        every = max(1, args.jobs // max(1, args.img2img))
        img2img_users = set(range(every // 2 + 1, args.jobs + 1, every)) if args.img2img else set()
        running = True

        async def sample_lag() -> None:
            while running:
                t0, loop0, cpu0 = time.perf_counter(), time.thread_time(), time.process_time()
                busy = converting > 0
                await asyncio.sleep(0.002)
                lag = max(0.0, time.perf_counter() - t0 - 0.002)
                lags.append(lag)
                long = (lag, time.thread_time() - loop0, time.process_time() - cpu0) if lag > 0.05 else None
                if long:
                    lag_cpu.append(long)
                if busy or converting > 0:
                    stall_lags.append(lag)
                    if long:
                        stall_cpu.append(long)

        sampler = asyncio.create_task(sample_lag())
        per_step = max(1, args.jobs // max(1, args.ramp))
        submitted = 0
        guild = 1
        wall0 = time.perf_counter()
        while submitted < args.jobs or len(delivered_at) + len(refused) < args.jobs:
            clock.t += 1.0
            # New interactions this second, handled concurrently with the poll pass below.
            batch = []
            for _ in range(min(per_step, args.jobs - submitted)):
                submitted += 1
                batch.append(submitted)

            arrived = time.perf_counter()

            async def one(user: int, arrived: float = arrived) -> None:
                # The handler starts when the loop gets to it; the tree's gate runs, then `defer`.
                started = time.perf_counter()
                await services.safety.gate(user_id=user, guild_id=guild)
                done = time.perf_counter()
                defer_times.append(done - arrived)
                gate_times.append(done - started)
                t1 = time.perf_counter()
                nonlocal converting
                img2img = user in img2img_users
                converting += img2img
                try:
                    result = await gen.submit(
                        GenerateOptions(prompt=f"benchmark image {user}", steps=20),
                        user_id=user,
                        guild_id=guild,
                        channel_id=10,
                        channel_nsfw=False,
                        is_dm=False,
                        source_image=source if img2img else None,
                    )
                except UserFacingError as exc:
                    refused.append(str(exc))
                    return
                finally:
                    converting -= img2img
                submit_times.append(time.perf_counter() - t1)
                if len(stuck) < args.stuck:
                    stuck.add(result.job_id)
                    wait = args.stuck_for + rng.uniform(10, 30)
                else:
                    wait = rng.uniform(args.min_wait, args.max_wait)
                unplanned[result.job_id] = wait
                waited[result.job_id] = wait

            async def poll_pass() -> None:
                await services.scheduler.tick()
                await settle(services.scheduler)

            await asyncio.gather(poll_pass(), *(one(u) for u in batch))
            # Jobs the Horde accepted since: their simulated work starts counting now.
            planned: dict[str, tuple[float, float, bool]] = {}
            for job_id, wait in list(unplanned.items()):
                job = await gen.job(job_id)
                if job is not None and job.horde_id is not None:
                    plan[job_id] = (job.horde_id, clock.t + wait - 10, clock.t + wait)
                    by_horde_id[job.horde_id] = job_id
                    planned[job.horde_id] = (*plan[job_id][1:], job_id in stuck)
                    del unplanned[job_id]
            # The fake Horde's workers: start and finish what is due now; count the queue down. From a
            # thread: the loop's wait for the fake is the benchmark's, not a stall of the bot.
            for horde_id in await asyncio.to_thread(horde.run, work, clock.t, planned):
                done_at[by_horde_id[horde_id]] = clock.t
            if clock.t > args.max_wait + args.ramp + args.stuck_for + 3600:
                break
            if len(delivered_at) + len(refused) >= args.jobs and submitted >= args.jobs:
                break
        running = False
        await sampler
        wall = time.perf_counter() - wall0
        heap_peak = tracemalloc.get_traced_memory()[1] if args.heap else None
        await services.close()

    checks = horde.call("count", "GET", r"/generate/check/")
    # Checks per minute of the stuck jobs, after their first minute in the Horde's queue.
    stuck_rates: list[float] = []
    stuck_checks = horde.run(check_times, [plan[j][0] for j in stuck if j in plan])
    for job_id in stuck:
        if job_id not in plan:
            continue
        horde_id, start, _finish = plan[job_id]
        times = stuck_checks[horde_id]
        if not times:
            continue
        first = times[0]
        window_end = start  # until a worker takes it
        later = [t for t in times if first + 60 <= t < window_end]
        minutes = (window_end - first - 60) / 60
        if minutes > 0:
            stuck_rates.append(len(later) / minutes)
    statuses = horde.call("count", "GET", r"/generate/status/")
    posts = horde.call("count", "POST", r"/generate/async")
    fake_errors = horde.stop()
    delays = [delivered_at[j] - done_at[j] for j in delivered_at if j in done_at]
    mean_wait = statistics.mean(waited.values()) if waited else 0.0
    defer = defer_times
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"generations: {args.jobs} (all in flight together; {posts} POSTs), delivered {len(delivered_at)}")
    print(f"virtual time: {clock.t:.0f} s, real time: {wall:.1f} s")
    print(f"check budget: {args.checks_per_second:g}/s bot-wide")
    print(
        "interaction -> defer (arrival to defer: loop wait + safety gate), ms: "
        f"p50 {pct(defer, 0.5) * 1000:.2f}, p99 {pct(defer, 0.99) * 1000:.2f}, max {max(defer) * 1000:.2f}"
    )
    print(
        "of which the safety gate (its own await, incl. database), ms: "
        f"p50 {pct(gate_times, 0.5) * 1000:.2f}, p99 {pct(gate_times, 0.99) * 1000:.2f}"
    )
    print(
        "event loop wait alone, ms: "
        f"p50 {pct(lags, 0.5) * 1000:.2f}, p99 {pct(lags, 0.99) * 1000:.2f}, max {max(lags) * 1000:.2f}"
    )
    print(
        "submit (after defer until the progress message), ms: "
        f"p50 {pct(submit_times, 0.5) * 1000:.1f}, p99 {pct(submit_times, 0.99) * 1000:.1f}"
    )
    print(
        f"Horde calls per generation: check {checks / args.jobs:.1f}, status {statuses / args.jobs:.2f}; "
        f"mean simulated wait {mean_wait:.0f} s (virtual)"
    )
    print(
        f"delivery delay after done (virtual s): p50 {pct(delays, 0.5):.1f}, p99 {pct(delays, 0.99):.1f}, "
        f"max {max(delays):.1f}"
    )
    heap = "" if heap_peak is None else f"Python heap {heap_peak / 1024 / 1024:.1f} MiB (tracemalloc on), "
    print(f"peak memory: {heap}process max RSS {rss_kib / 1024:.0f} MiB (the fake Horde's process apart)")
    if fake_errors:
        print(f"the fake Horde's own errors: {fake_errors}")
    print(stall_line("while converting", stall_cpu))
    print(stall_line("at any time", lag_cpu))
    stuck_per_minute = max(stuck_rates) if stuck_rates else float("nan")
    print(f"stuck jobs ({len(stuck_rates)}): at most {stuck_per_minute:.1f} checks a minute after the first")
    figures = {
        "jobs": args.jobs,
        "refused": len(refused),
        "delivered": len(delivered_at),
        "posts": posts,
        "status_calls_per_job": round(statuses / max(1, len(delivered_at)), 3),
        "checks_per_job": round(checks / max(1, len(delivered_at)), 2),
        "mean_wait_s": round(mean_wait, 1),
        "stuck_checks_per_minute": round(stuck_per_minute, 2),
        "delivery_p50_s": round(pct(delays, 0.5), 2),
        "delivery_p99_s": round(pct(delays, 0.99), 2),
        "peak_rss_mib": round(rss_kib / 1024, 1),
        "submit_p99_ms": round(pct(submit_times, 0.99) * 1000, 1),
        "defer_p99_ms": round(pct(defer, 0.99) * 1000, 2),
        "loop_lag_max_ms": round(max(lags) * 1000, 2),
        "img2img_sources": len(img2img_users),
        "loop_stall_max_ms": round(max(stall_lags, default=float("nan")) * 1000, 2),
        "loop_stall_p99_ms": round(pct(stall_lags, 0.99) * 1000, 2),
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--checks-per-second", type=float, default=20.0)
    parser.add_argument("--ramp", type=int, default=25, help="virtual seconds over which jobs are submitted")
    parser.add_argument("--min-wait", type=float, default=30.0)
    parser.add_argument("--max-wait", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stuck", type=int, default=20, help="jobs no worker takes for --stuck-for seconds")
    parser.add_argument("--stuck-for", type=float, default=300.0)
    parser.add_argument("--img2img", type=int, default=10, help="jobs with a 3072² source image to convert")
    parser.add_argument(
        "--heap", action="store_true", help="trace the Python heap's peak (slower: figures not comparable)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
