"""Benchmark the automated-roles background sync: throughput and peak memory for N linked members.

Run from the repository root: ``python bench/roles.py [--members 10000] [--batch 100]``.
Uses the real service, database (SQLite in a temporary folder) and Horde client against the fake Horde on
127.0.0.1, in a process of its own (`bench/_horde_process.py`, as bench/generation.py runs it: neither its
request handling nor its memory counts in the figures); Discord is an in-memory gateway (every member in one
guild). Prints figures; asserts nothing.

Two rule sets are measured: "linked" (needs no Horde data: database paging and role bookkeeping only) and
"tiers" (kudos tiers and trusted: one `GET /v2/users/{id}` per member, with an unlimited call budget, so
the figure is the bot's own cost, not the budget's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _horde_process import HordeProcess  # noqa: E402  (bench/ is on sys.path: the script's folder)
from sqlalchemy import insert  # noqa: E402

from bot.app import build_runtime, build_services  # noqa: E402
from bot.db.models import User  # noqa: E402
from bot.horde.models import ApiKey  # noqa: E402
from bot.services.guild_config import KudosTier  # noqa: E402
from bot.services.roles import ProblemKind  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.support.clock import TestClock  # noqa: E402
from tests.support.runtime import runtime_of  # noqa: E402

BENCH_START = datetime(2026, 1, 1, tzinfo=UTC)

GUILD = 1
LINKED, TRUSTED, BRONZE, SILVER = 101, 102, 103, 104


@dataclass
class MemoryGateway:
    members: dict[int, set[int]] = field(default_factory=dict)
    changes: int = 0

    def ready(self) -> bool:
        return True

    def guild_ids(self) -> list[int]:
        return [GUILD]

    async def member_roles(self, guild_id: int, discord_id: int) -> frozenset[int] | None:
        roles = self.members.get(discord_id)
        return frozenset(roles) if roles is not None else None

    def role_problem(self, guild_id: int, role_id: int) -> ProblemKind | None:
        return None

    async def add_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        self.members[discord_id].add(role_id)
        self.changes += 1

    async def remove_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        self.members[discord_id].discard(role_id)
        self.changes += 1


def add_users(horde: Any, members: int) -> list[int]:
    """`members` Horde accounts (kudos 0-999), in the fake's process (`HordeProcess.run`): their ids."""
    return [horde.add_user(f"b{i}", kudos=float(i % 1000)).id for i in range(members)]


async def run(members: int, batch: int, rules: str, horde: HordeProcess, memory: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = TestClock(t=0.0, start=BENCH_START)
        roles_section = {
            "interval": 3600,
            "step_seconds": 1.0,
            "calls_per_minute": 1e9,
            "batch_size": batch,
        }
        settings = make_settings(Path(tmp), horde.base_url, roles=roles_section)
        services = build_services(build_runtime(settings, clock=clock))
        await services.start()
        try:
            if rules == "linked":
                await services.guild_config.update(GUILD, linked_role_id=LINKED)
            else:
                await services.guild_config.update(
                    GUILD,
                    trusted_role_id=TRUSTED,
                    kudos_tiers=[
                        KudosTier(threshold=50, role_id=BRONZE),
                        KudosTier(threshold=500, role_id=SILVER),
                    ],
                )
            horde_ids = horde.run(add_users, members)
            encrypted = runtime_of(services).cipher.encrypt(ApiKey("k" * 22))
            rows = [
                {
                    "discord_id": 10_000_000 + i,
                    "horde_user_id": horde_ids[i],
                    "horde_username": f"b{i}#{horde_ids[i]}",
                    "api_key_encrypted": encrypted,
                    "linked_at": clock.now(),
                }
                for i in range(members)
            ]
            async with runtime_of(services).db.session() as session:
                await session.execute(insert(User), rows)
            gateway = MemoryGateway({10_000_000 + i: set() for i in range(members)})
            services.roles.gateway.plug(gateway)
            if memory:
                tracemalloc.start()
            started = time.perf_counter()
            steps = 0
            while services.roles.stats.passes_finished == 0:
                clock.t += 1
                steps += 1
                await services.roles.sync_step()
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] if memory else 0
            if memory:
                tracemalloc.stop()
            stats = services.roles.stats
            return {
                "rules": rules,
                "members": members,
                "seconds": elapsed,
                "per_second": members / elapsed,
                "steps": steps,
                "largest_page": stats.largest_page,
                "horde_calls": stats.horde_calls,
                "role_changes": gateway.changes,
                "peak_kib": peak / 1024,
            }
        finally:
            await services.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    horde = HordeProcess(enforce_rate_limits=False)
    horde.start()
    try:
        print(f"automated roles sync, {args.members} linked members, batch {args.batch}")
        results: dict[str, dict[str, float]] = {}
        for rules in ("linked", "tiers"):
            timed = await run(args.members, args.batch, rules, horde, memory=False)
            traced = await run(args.members, args.batch, rules, horde, memory=True)
            results[rules] = {
                "seconds": round(timed["seconds"], 2),
                "members_per_second": round(timed["per_second"]),
                "horde_calls": timed["horde_calls"],
                "role_changes": timed["role_changes"],
                "peak_kib": round(traced["peak_kib"]),
            }
            print(
                f"  {rules:>6}: {timed['seconds']:7.2f} s, {timed['per_second']:8.0f} members/s, "
                f"{timed['horde_calls']} Horde calls, {timed['role_changes']} role changes, "
                f"largest page {timed['largest_page']}, peak traced memory during the pass "
                f"{traced['peak_kib']:.0f} KiB"
            )
        # Memory should not grow with the member count: compare with a tenth of the members.
        small = await run(max(1, args.members // 10), args.batch, "tiers", horde, memory=True)
        print(f"  tiers with {small['members']} members: peak traced memory {small['peak_kib']:.0f} KiB")
        # The last line is one JSON object, so runs can be compared.
        figures = {
            "members": args.members,
            "batch": args.batch,
            **{f"{name}_{key}": value for name, result in results.items() for key, value in result.items()},
            "small_members": small["members"],
            "small_peak_kib": round(small["peak_kib"]),
        }
        print(json.dumps(figures))
    finally:
        horde.stop()


if __name__ == "__main__":
    asyncio.run(main())
