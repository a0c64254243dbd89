"""Benchmark kudos gifting: a storm of reaction events, every gift paid exactly once.

Run from the repository root:
``python bench/kudos.py [--events 1000] [--members 100] [--spread 1.0] [--reciprocal 0.2]``.
Uses the real KudosService, database (SQLite in a temporary folder) and Horde client against the fake Horde
on 127.0.0.1 **with its rate limits on** (1 transfer per second per key, 90 per hour), in a process of its
own (`bench/_horde_process.py`, as bench/generation.py runs it: its request handling neither takes the GIL
from the bot's event loop nor counts in `peak_rss_mib`); Discord is an in-memory gateway. Events arrive
within `--spread` seconds, each handled as its own task (as discord.py dispatches them), and about one in
ten repeats an earlier (message, member, emoji): a duplicate gateway event or a remove and re-add. Gifts
go from a lower- to a higher-numbered member, except a `--reciprocal` share that goes back to a recent
giver: the Horde refuses such a gift within a minute of the other one (400 `TooFastKudosTransfers`), so the
bot must hold it until it can succeed (the run then lasts over a minute).

Prints a table, then one JSON line: `events`, `unique_gifts`, `paid_exactly_once` (checked against the fake
Horde: each gift's Idempotency-Key applied once, every gift sent), `balances_match`, `first_gift_p99_s`
(from a reaction to its transfer call, for each giver's first gift: no 1/s wait involved, so the bot's own
queueing; reciprocal gifts, held by the Horde's rule, excluded), `gift_p50_s`/`gift_p99_s` (every gift but
the reciprocal ones, including the wait for the giver's 1/s slot), `reciprocal_gifts`,
`reciprocal_hold_p50_s`, `reciprocal_400s` (transfers refused as TooFastKudosTransfers), `status_429s`,
`total_s`, `peak_rss_mib`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _horde_process import HordeProcess  # noqa: E402  (bench/ is on sys.path: the script's folder)
from sqlalchemy import insert  # noqa: E402

from bot.app import build_runtime, build_services  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.db.kudos import SENT  # noqa: E402
from bot.db.models import User  # noqa: E402
from bot.horde.models import ApiKey  # noqa: E402
from bot.services.kudos import MessageAuthor, ReactionEvent, idempotency_key_for  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.support.runtime import runtime_of  # noqa: E402

GUILD, CHANNEL, BOT = 1, 2, 3
MEMBER_BASE = 1_456_074_443_980_800_000
MESSAGES_PER_MEMBER = 5
EMOJIS = {"👍": 5, "❤": 20}


class MemoryGateway:
    def __init__(self, authors: dict[int, int]) -> None:
        self.authors = authors
        self.reactions = 0

    def bot_user_id(self) -> int | None:
        return BOT

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        author = self.authors.get(message_id)
        return MessageAuthor(author, False) if author is not None else None

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool:
        return False

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool:
        self.reactions += 1
        return True

    def display_name(self, guild_id: int | None, user_id: int) -> str:
        return f"<@{user_id}>"


# Run in the fake Horde's process (`HordeProcess.run`): one round trip each, plain values back.


def add_users(horde: Any, members: int) -> list[tuple[int, str, str]]:
    """`members` Horde accounts with 10,000 kudos each: (id, username, API key)."""
    users = [horde.add_user(f"m{i}", kudos=10_000) for i in range(members)]
    return [(u.id, u.username, u.apikey or "") for u in users]


def transfers(horde: Any) -> list[tuple[int, float, str, str | None]]:
    """Every POST /kudos/transfer the fake received: (status, when, its Idempotency-Key, the error's rc).
    `when` is the fake's clock, time.monotonic: one clock for every process of the machine, so it compares
    with the benchmark's own `time.monotonic()`."""
    found = []
    for call in horde.calls_to(r"/kudos/transfer$", "POST"):
        key = {k.lower(): v for k, v in call.headers.items()}["idempotency-key"]
        rc = call.response.get("rc") if isinstance(call.response, dict) else None
        found.append((call.status, call.at, key, rc))
    return found


def balances(horde: Any, user_ids: list[int]) -> list[float]:
    return [horde.user(user_id).kudos for user_id in user_ids]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(events: int, members: int, spread: float, seed: int, reciprocal: float) -> dict[str, Any]:
    rng = random.Random(seed)
    horde = HordeProcess(enforce_rate_limits=True)
    horde.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = make_settings(
                Path(tmp), horde.base_url, kudos={"check_interval": 1.0, "retry_base": 1.0, "retry_cap": 10.0}
            )
            services = build_services(build_runtime(settings, clock=SystemClock()))
            await services.start()
            kudos = services.kudos
            await services.guild_config.update(GUILD, kudos_emojis=EMOJIS)
            horde_users = horde.run(add_users, members)
            ids = [MEMBER_BASE + i for i in range(members)]
            rows = [
                {
                    "discord_id": ids[i],
                    "horde_user_id": user_id,
                    "horde_username": username,
                    "api_key_encrypted": runtime_of(services).cipher.encrypt(ApiKey(apikey)),
                    "linked_at": datetime.now(UTC),
                }
                for i, (user_id, username, apikey) in enumerate(horde_users)
            ]
            async with runtime_of(services).db.session() as session:
                await session.execute(insert(User), rows)
            authors = {
                10_000 + i * MESSAGES_PER_MEMBER + k: ids[i]
                for i in range(members)
                for k in range(MESSAGES_PER_MEMBER)
            }
            gateway = MemoryGateway(authors)
            kudos.gateway.plug(gateway)
            kudos.start()
            reacted_at: dict[str, float] = {}
            first_of_giver: set[str] = set()
            seen_givers: set[int] = set()
            # The storm: (reactor, message, emoji), lower-numbered members gifting higher-numbered ones,
            # and a share going back to a recent giver (the author gifts the reactor of a recent event).
            storm: list[tuple[int, int, str]] = []
            back_keys: set[str] = set()
            for _ in range(events):
                if storm and rng.random() < 0.1:
                    storm.append(rng.choice(storm))  # a duplicate event or a remove and re-add
                    continue
                if storm and rng.random() < reciprocal:
                    earlier_giver, earlier_message, _e = rng.choice(storm[-20:])
                    giver = (earlier_message - 10_000) // MESSAGES_PER_MEMBER
                    author = earlier_giver
                    emoji = rng.choice(list(EMOJIS))
                    message = 10_000 + author * MESSAGES_PER_MEMBER + rng.randrange(MESSAGES_PER_MEMBER)
                    storm.append((giver, message, emoji))
                    continue
                giver = rng.randrange(0, members - 1)
                author = rng.randrange(giver + 1, members)
                message = 10_000 + author * MESSAGES_PER_MEMBER + rng.randrange(MESSAGES_PER_MEMBER)
                storm.append((giver, message, rng.choice(list(EMOJIS))))

            # Gifts back: to a member who gifted this giver earlier in the storm (by construction, or a
            # forward gift to someone whose own gift back came first). The Horde holds these a minute.
            pairs: set[tuple[int, int]] = set()
            for giver, message, emoji in storm:
                author = (message - 10_000) // MESSAGES_PER_MEMBER
                if (author, giver) in pairs:
                    back_keys.add(f"reaction:{GUILD}:{message}:{ids[giver]}:{emoji}")
                pairs.add((giver, author))

            async def ticker() -> None:
                while True:
                    await services.scheduler.tick()
                    await asyncio.sleep(0.05)

            async def deliver(index: int, giver: int, message: int, emoji: str) -> None:
                await asyncio.sleep(spread * index / max(1, len(storm)))
                key = f"reaction:{GUILD}:{message}:{ids[giver]}:{emoji}"
                reacted_at.setdefault(key, time.monotonic())
                if ids[giver] not in seen_givers and key not in back_keys:
                    seen_givers.add(ids[giver])
                    first_of_giver.add(key)
                await kudos.on_reaction(
                    ReactionEvent(
                        guild_id=GUILD,
                        channel_id=CHANNEL,
                        message_id=message,
                        user_id=ids[giver],
                        emoji_name=emoji,
                        emoji_id=None,
                        emoji_text=emoji,
                    )
                )

            tick_task = asyncio.create_task(ticker())
            began = time.monotonic()
            await asyncio.gather(*(deliver(i, *e) for i, e in enumerate(storm)))
            unique = {f"reaction:{GUILD}:{m}:{ids[g]}:{e}" for g, m, e in storm}
            while await kudos.repo.count_state(SENT) < len(unique) and time.monotonic() - began < 600:
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - began
            tick_task.cancel()
            gifts = await kudos.repo.all_gifts()
            calls = horde.run(transfers)
            applied = Counter(key for status, _at, key, _rc in calls if status == 200)
            expected_per_member = Counter[int]()
            for g in gifts:
                expected_per_member[g.receiver_id] += g.amount
                expected_per_member[g.giver_id] -= g.amount
            # When each gift's first transfer reached the Horde: the fake records every call with its clock
            # (time.monotonic, like `reacted_at`: the same clock in both processes), and the Idempotency-Key
            # names the gift.
            first_call: dict[str, float] = {}
            for _status, at, idempotency, _rc in calls:
                first_call[idempotency] = min(at, first_call.get(idempotency, at))
            started_at = {
                k: first_call[idempotency_key_for(k)] for k in unique if idempotency_key_for(k) in first_call
            }
            balances_ok = all(
                kudos_now == 10_000 + expected_per_member[ids[i]]
                for i, kudos_now in enumerate(horde.run(balances, [u[0] for u in horde_users]))
            )
            latencies = [
                started_at[k] - reacted_at[k] for k in unique if k in started_at and k not in back_keys
            ]
            held = [started_at[k] - reacted_at[k] for k in unique & back_keys if k in started_at]
            first = [started_at[k] - reacted_at[k] for k in first_of_giver if k in started_at]
            refused_back = sum(
                1 for status, _at, _key, rc in calls if status == 400 and rc == "TooFastKudosTransfers"
            )
            await services.close()
            return {
                "events": len(storm),
                "unique_gifts": len(unique),
                "gifts_recorded": len(gifts),
                "gifts_sent": sum(1 for g in gifts if g.state == SENT),
                "transfers_paid": sum(applied.values()),
                "paid_exactly_once": len(applied) == len(unique) and set(applied.values()) == {1},
                # The same Idempotency-Key sent again after a 200 (the Horde applies it once, but the bot
                # should not need to): 0 unless an answer was lost (a timeout).
                "duplicate_sends": sum(n - 1 for n in applied.values()),
                "transfer_retries": sum(max(0, g.attempts - 1) for g in gifts),
                "balances_match": balances_ok,
                "status_429s": sum(1 for status, _at, _key, _rc in calls if status == 429),
                "bot_reactions_sent": gateway.reactions,
                "first_gift_p50_s": round(statistics.median(first), 3) if first else None,
                "first_gift_p99_s": round(pct(first, 0.99), 3),
                "gift_p50_s": round(statistics.median(latencies), 3) if latencies else None,
                "gift_p99_s": round(pct(latencies, 0.99), 3),
                "gift_max_s": round(max(latencies, default=0.0), 3),
                "reciprocal_gifts": len(unique & back_keys),
                "reciprocal_hold_p50_s": round(statistics.median(held), 3) if held else None,
                "reciprocal_400s": refused_back,
                "total_s": round(elapsed, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
    finally:
        horde.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--spread", type=float, default=1.0, help="seconds over which the events arrive")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--reciprocal", type=float, default=0.0, help="share of gifts going back to a recent giver (0-1)"
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args.events, args.members, args.spread, args.seed, args.reciprocal))
    for name, value in figures.items():
        print(f"{name:24} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
