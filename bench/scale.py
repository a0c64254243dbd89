"""Benchmark several bot processes on one PostgreSQL database (issue #17): throughput and jobs in flight for
1 and 2 `run.py` processes, and the takeover when one of 2 is killed.

Run from the repository root: ``python bench/scale.py [--jobs 100]``. Needs PostgreSQL's binaries (as the
tests: a throwaway server on 127.0.0.1).

The world of tests/smoke/test_scale.py (tests/support/cluster.py): real `run.py` processes against the fake
Discord (two servers, one per shard) and the fake Horde (its rate limits off: the pacer is measured by
bench/burst.py), every member linked with `/login` and running one `/generate`. The fake Horde's workers take
each request on its first check and finish it on the second. Times are wall-clock on this machine.

Runs:
- `1 process`: one process with both shards.
- `2 processes`: one shard each.
- `2 processes, one killed`: once every request is at the Horde, the second process is killed with SIGKILL;
  the survivor takes its jobs over when their leases (`database.lease_seconds`, 3 s here) expire.

Figures per run: `throughput_jobs_per_s` (jobs / seconds from the first /generate to the last result
posted), `in_flight_peak` and `in_flight_mean` per process (jobs at the Horde whose result isn't posted yet,
sampled every 0.1 s, counted for the process running the job's server), `delivered` (prompts with a result
message), `duplicates` (result messages beyond one per prompt), `told_to_retry` (members told "The bot
restarted while sending this request": a job killed between its POST and storing the Horde's answer is
sent again by the survivor, once; only a job cut off that way twice is failed, so this stays 0),
`sent_again` (requests the fake Horde got a second time for one prompt: the jobs the kill cut off between
their POST and storing its answer, each sent again by the survivor); for the kill, `takeover_s`: from
the kill to the last of the killed process's unposted results being posted by the survivor (null if some
never were within `--patience`, e.g. told to try again). Prints figures; asserts
nothing. The last line is one JSON object: the kill run's `processes`, `jobs`, `delivered`, `duplicates`,
`takeover_s`, `told_to_retry`, `sent_again`, plus `throughput_jobs_per_s` and `in_flight_peak` of every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _pytest.outcomes import Failed  # noqa: E402  (what the cluster's waits raise when time runs out)
from cryptography.fernet import Fernet  # noqa: E402

from bot.services.jobs.engine import RESTARTED_WHILE_SENDING  # noqa: E402
from tests.fakes.discord_server import FakeDiscord  # noqa: E402
from tests.fakes.horde import FakeHorde  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402
from tests.support.cluster import Cluster, build_world, generate_all, set_up, start_processes  # noqa: E402
from tests.support.run_py import DISCORD_TOKEN  # noqa: E402

LAYOUTS: dict[str, dict[str, list[int]]] = {
    "1 process": {"bot-a": [0, 1]},
    "2 processes": {"bot-a": [0], "bot-b": [1]},
    "2 processes, one killed": {"bot-a": [0], "bot-b": [1]},
}


def owner_of(layout: dict[str, list[int]]) -> dict[int, str]:
    return {shard: name for name, shards in layout.items() for shard in shards}


def in_flight(cluster: Cluster, layout: dict[str, list[int]]) -> dict[str, int]:
    """Jobs at the Horde whose result isn't posted yet, by the process running their server."""
    at_horde = set(cluster.horde_prompts())
    owners = owner_of(layout)
    counts = dict.fromkeys(layout, 0)
    for server in cluster.servers:
        for prompt in server.prompts:
            if prompt in at_horde and not cluster.results(prompt):
                counts[owners[server.shard]] += 1
    return counts


async def settled(cluster: Cluster, prompts: list[str], patience: float) -> bool:
    """Until every prompt has a result; False (and a line saying so) if that takes over `patience` s."""
    try:
        await cluster.until(lambda: all(cluster.results(p) for p in prompts), "results", patience)
    except Failed:
        missing = sum(1 for p in prompts if not cluster.results(p))
        print(f"  {missing} of {len(prompts)} results still unposted after {patience:.0f} s")
        return False
    return True


async def run_one(
    title: str, layout: dict[str, list[int]], jobs: int, database_url: str, patience: float
) -> dict[str, Any]:
    kill = title.endswith("killed")
    horde = FakeHorde(enforce_rate_limits=False)
    horde.start()
    fake = FakeDiscord(token=DISCORD_TOKEN, ack_timeout=None)
    cluster = build_world(fake, horde, shard_count=2, members=jobs // 2, authors=0)
    prompts = [p for s in cluster.servers for p in s.prompts]
    samples: dict[str, list[int]] = {name: [] for name in layout}
    takeover_s: float | None = None
    await fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            secret = Fernet.generate_key().decode()
            async with start_processes(Path(tmp), cluster, database_url, layout, secret):
                await set_up(cluster)
                horde.autopilot(start_after=1, finish_after=2)
                started = time.perf_counter()

                async def sample() -> None:
                    while True:
                        for name, count in in_flight(cluster, layout).items():
                            samples[name].append(count)
                        await asyncio.sleep(0.1)

                sampler = asyncio.create_task(sample())
                try:
                    await generate_all(cluster)
                    if kill:
                        await cluster.until(lambda: len(horde.jobs) == len(prompts), "every request", 300)
                        dead = "bot-b"
                        orphans = [
                            p
                            for s in cluster.servers
                            if owner_of(layout)[s.shard] == dead
                            for p in s.prompts
                            if not cluster.results(p)
                        ]
                        await cluster.kill(dead)
                        killed_at = time.perf_counter()
                        print(f"  killed {dead} with {len(orphans)} results unposted")
                        if await settled(cluster, orphans, patience):
                            takeover_s = time.perf_counter() - killed_at
                    await settled(cluster, prompts, patience)
                    elapsed = time.perf_counter() - started
                finally:
                    sampler.cancel()
                for process in cluster.processes.values():
                    if process.proc.returncode is None:
                        await process.terminate()
    finally:
        await fake.stop()
        horde.stop()
    delivered = cluster.delivered()
    figures: dict[str, Any] = {
        "run": title,
        "processes": len(layout),
        "jobs": len(prompts),
        "delivered": sum(1 for n in delivered.values() if n),
        "duplicates": sum(max(0, n - 1) for n in delivered.values()),
        "told_to_retry": sum(1 for m in fake.messages if not m.deleted and RESTARTED_WHILE_SENDING in m.text),
        "sent_again": sum(n - 1 for n in Counter(cluster.horde_prompts()).values() if n > 1),
        "seconds": round(elapsed, 2),
        "throughput_jobs_per_s": round(len(prompts) / elapsed, 2),
        "in_flight_peak": {name: max(values, default=0) for name, values in samples.items()},
        "in_flight_mean": {
            name: round(statistics.fmean(values), 1) if values else 0.0 for name, values in samples.items()
        },
        "takeover_s": round(takeover_s, 2) if takeover_s is not None else None,
    }
    print(
        f"{title}: {figures['delivered']}/{figures['jobs']} delivered, {figures['duplicates']} duplicates, "
        f"{figures['told_to_retry']} told to try again, {figures['sent_again']} sent again, "
        f"{figures['seconds']} s, {figures['throughput_jobs_per_s']} jobs/s, in flight peak "
        f"{figures['in_flight_peak']} mean {figures['in_flight_mean']}"
        + (f", takeover {figures['takeover_s']} s" if takeover_s is not None else "")
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="generations per run (half per server)")
    parser.add_argument(
        "--patience",
        type=float,
        default=300.0,
        help="seconds to wait for results before reporting them missing",
    )
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with postgres_server() as server:
        if server is None:
            sys.exit("PostgreSQL is not installed (bench/scale.py runs its processes on PostgreSQL)")
        for title, layout in LAYOUTS.items():
            # A fresh migrated database per run (new_database runs its own event loop: outside ours).
            url = server.new_database()
            runs.append(asyncio.run(run_one(title, layout, args.jobs, url, args.patience)))
    killed = runs[-1]
    summary = {
        "processes": killed["processes"],
        "jobs": killed["jobs"],
        "delivered": killed["delivered"],
        "duplicates": killed["duplicates"],
        "takeover_s": killed["takeover_s"],
        "told_to_retry": killed["told_to_retry"],
        "sent_again": killed["sent_again"],
        "throughput_jobs_per_s": {r["run"]: r["throughput_jobs_per_s"] for r in runs},
        "in_flight_peak": {r["run"]: r["in_flight_peak"] for r in runs},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
