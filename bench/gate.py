"""Benchmark the command gate's statement on PostgreSQL (issue #17): what several processes sharing one
database add to every Horde command.

Run from the repository root: ``python bench/gate.py [--calls 2000] [--members 2000] [--concurrency 50]``.
Needs PostgreSQL's binaries (a throwaway server on 127.0.0.1, as the tests start).

On a shared database the gate (bot.services.safety, `SafetyRepository.gate`) runs one statement per command:
- `read`: reads the member's safety cooldown and the bot's IP pause (the gate before requests were counted
  across processes);
- `member`: the same reads, and counts the request against the member's per-minute limit in
  `safety_request_pace` (a one-row upsert under the row's lock): the gate of a command in a DM;
- `server`: the same, counting it against the server's limit first (two rows, still one statement): the
  gate of a command in a server, as most are.
Each is timed one command at a time (`*_p50_ms`, `*_p99_ms`) and with `--concurrency` commands at once
(`*_concurrent_p99_ms`, and `*_per_s`: commands gated per second). Members are spread over `--members`
and servers over `--servers`, with the shipped limits (`[safety]` defaults), so that the limits rarely
refuse (a refusal costs a second read; `refused` counts them). Times are wall-clock.
Prints figures; asserts nothing. The last line is one JSON object with those keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _shared import pct  # noqa: E402  (bench/ is on sys.path: the script's folder)

from bot.config import SafetySettings  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.db.safety import RequestPace, SafetyRepository  # noqa: E402
from bot.services.safety import request_paces  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402


async def measure(url: str, calls: int, members: int, servers: int, concurrency: int) -> dict[str, float]:
    db = Database(url, exclusive=False)
    await db.connect()
    repo = SafetyRepository(db)
    rng = random.Random(7)
    refused = 0
    figures: dict[str, float] = {}
    try:
        member_pace, server_pace = request_paces(SafetySettings())
        for name, pace, in_server in (
            ("read", None, False),
            ("member", member_pace, False),
            ("server", member_pace, True),
        ):

            async def gate(
                member: int, pace: RequestPace | None = pace, in_server: bool = in_server
            ) -> float:
                nonlocal refused
                server = (member % servers, server_pace) if in_server else None
                start = time.perf_counter()
                found = await repo.gate(member, datetime.now(UTC), pace, server)
                took = (time.perf_counter() - start) * 1000
                refused += found.wait > 0 or found.server_wait > 0
                return took

            for member in range(min(members, 100)):  # warm the pool and the plans; not timed
                await gate(member)
            one_at_a_time = [await gate(rng.randrange(members)) for _ in range(calls)]
            start = time.perf_counter()
            at_once: list[float] = []
            for offset in range(0, calls, concurrency):
                batch = [gate(rng.randrange(members)) for _ in range(min(concurrency, calls - offset))]
                at_once.extend(await asyncio.gather(*batch))
            elapsed = time.perf_counter() - start
            figures[f"{name}_p50_ms"] = round(pct(one_at_a_time, 0.5), 2)
            figures[f"{name}_p99_ms"] = round(pct(one_at_a_time, 0.99), 2)
            figures[f"{name}_concurrent_p99_ms"] = round(pct(at_once, 0.99), 2)
            figures[f"{name}_per_s"] = round(calls / elapsed, 1)
            shown = {
                key.removeprefix(f"{name}_"): value for key, value in figures.items() if key.startswith(name)
            }
            print(f"{name}: {shown} ({concurrency} at once for concurrent_p99_ms and per_s)")
    finally:
        await db.close()
    figures["refused"] = refused
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="gated commands per measurement")
    parser.add_argument("--members", type=int, default=2000, help="members the commands are spread over")
    parser.add_argument("--servers", type=int, default=200, help="servers the commands come from")
    parser.add_argument("--concurrency", type=int, default=50, help="commands at once in the second run")
    args = parser.parse_args()
    with postgres_server() as server:
        if server is None:
            sys.exit("PostgreSQL is not installed (bench/gate.py measures the gate on PostgreSQL)")
        url = server.new_database()
        figures = asyncio.run(measure(url, args.calls, args.members, args.servers, args.concurrency))
    print(
        json.dumps(
            {
                "calls": args.calls,
                "members": args.members,
                "servers": args.servers,
                "concurrency": args.concurrency,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
