"""Benchmark the retention prune: database size before and after, prune time, and event-loop stalls.

Run from the repository root: ``python bench/retention.py [--generations 10000] [--gifts 5000]
[--ratings 2000] [--days 60]``.

Fills a fresh SQLite database (in a temporary folder, migrated as the bot does) with 60 simulated days of
use: generations (10% img2img with 1024² sources, each stored through the bot's bounded source store, as
/generate does), kudos gifts and ratings, spread evenly over the days, with a few still in flight at the
end. Then runs the real `RetentionService.prune()` with the default `[retention]` settings while a ticker
measures how late the event loop wakes it (`max_loop_stall_ms`), and checks that afterwards the database
holds only what retention allows (`retention_ok`; nothing over retention, everything in flight kept).
Prints figures; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw, ImageFilter  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from bot.clock import SystemClock  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.db.generation import GenerationJobRow  # noqa: E402
from bot.db.kudos import GiftRow  # noqa: E402
from bot.db.ratings import GenerationRatingItemRow, GenerationRatingRow, RatingImageRow, RatingVoteRow  # noqa: E402
from bot.db.retention import RetentionRepository  # noqa: E402
from bot.db.sources import SourceImageStore  # noqa: E402
from bot.scheduler import Scheduler  # noqa: E402
from bot.services.images import prepare_image  # noqa: E402
from bot.services.retention import RetentionService, RetentionSettings  # noqa: E402

CHUNK = 500
MEMBERS = 300


def source_images(count: int, rng: random.Random) -> list[bytes]:
    """1024² photo-like sources (shapes, gradients, grain) prepared as /generate prepares an upload."""
    out = []
    for _ in range(count):
        img = Image.new("RGB", (1024, 1024), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(60):
            x, y = rng.randrange(1024), rng.randrange(1024)
            r = rng.randrange(20, 300)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
        img = img.filter(ImageFilter.GaussianBlur(6))
        grain = Image.effect_noise((1024, 1024), 24).convert("RGB")
        img = Image.blend(img, grain, 0.12)
        png = io.BytesIO()
        img.save(png, format="PNG")
        out.append(prepare_image(png.getvalue()).webp)
    return out


def file_mib(path: Path) -> float:
    total = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return round(total / 1024 / 1024, 1)


async def checkpoint(db: Database) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


async def fill(
    db: Database, store: SourceImageStore, args: argparse.Namespace, end: datetime
) -> dict[str, Any]:
    rng = random.Random(14)
    span = timedelta(days=args.days)
    sources = source_images(12, rng)

    def at(i: int, n: int) -> datetime:
        return end - span + span * (i / n) + timedelta(seconds=rng.random() * 60)

    # Generations: img2img ones go through the store as /generate does (bounded: it evicts as it goes).
    rows: list[dict[str, Any]] = []
    img2img = 0
    source_bytes = 0
    for i in range(args.generations):
        created = at(i, args.generations)
        user = 1000 + rng.randrange(MEMBERS)
        in_flight = i >= args.generations - 20
        source_id = None
        payload: dict[str, Any] = {
            "prompt": f"a lighthouse on a cliff at dusk, oil painting, detailed, #{i}",
            "params": {"width": 1024, "height": 1024, "steps": 30, "n": 1, "sampler_name": "k_euler"},
            "models": ["AlbedoBase XL (SDXL)"],
            "nsfw": False,
            "censor_nsfw": True,
            "r2": True,
        }
        if i % 10 == 0:
            img2img += 1
            data = sources[img2img % len(sources)] + i.to_bytes(8, "big")  # unique: stored, not shared
            source_bytes += len(data)
            source_id = await store.put(user, data, created)
            payload["source_processing"] = "img2img"
            payload["params"]["denoising_strength"] = 0.6
        rows.append(
            {
                "horde_id": f"{rng.getrandbits(128):032x}",
                "user_id": user,
                "guild_id": 1,
                "channel_id": 2,
                "message_id": 10_000_000 + i,
                "result_message_id": 20_000_000 + i,
                "private": False,
                "anonymous": False,
                "key_source": "user",
                "payload": payload,
                "state": "waiting" if in_flight else "done",
                "kudos": 12.0,
                "images": 0 if in_flight else 1,
                "style": None,
                "model": "AlbedoBase XL (SDXL)",
                "source_id": source_id,
                "created_at": created,
                "updated_at": created + timedelta(seconds=40),
                "finished_at": None if in_flight else created + timedelta(seconds=40),
            }
        )
        if len(rows) >= CHUNK:
            await _insert(db, GenerationJobRow, rows)
    await _insert(db, GenerationJobRow, rows)

    gifts = []
    for i in range(args.gifts):
        created = at(i, args.gifts)
        state = "sent" if i < args.gifts - 20 else rng.choice(("queued", "pending"))
        if state == "sent" and i % 20 == 0:
            state = rng.choice(("failed", "lapsed"))
        gifts.append(
            {
                "dedup_key": f"reaction:1:{30_000_000 + i}:{1000 + i % MEMBERS}:👍",
                "idempotency_key": f"hordebot-{rng.getrandbits(160):040x}",
                "source": "reaction",
                "guild_id": 1,
                "channel_id": 2,
                "message_id": 30_000_000 + i,
                "emoji": "👍",
                "giver_id": 1000 + i % MEMBERS,
                "receiver_id": 1000 + (i * 7) % MEMBERS,
                "amount": 5,
                "state": state,
                "attempts": 1,
                "horde_response": '{"transferred": 5}' if state == "sent" else None,
                "created_at": created,
                "updated_at": created + timedelta(seconds=2),
                "sent_at": created + timedelta(seconds=2) if state == "sent" else None,
            }
        )
        if len(gifts) >= CHUNK:
            await _insert(db, GiftRow, gifts)
    await _insert(db, GiftRow, gifts)

    # Ratings: three quarters /rate votes (each on its served image), a quarter ratings of generations.
    votes = args.ratings * 3 // 4
    for i in range(votes):
        created = at(i, votes)
        state = "submitted" if i < votes - 10 else "choosing"
        async with db.session() as session:
            image_id = (
                await session.execute(
                    insert(RatingImageRow)
                    .values(
                        guild_id=1,
                        channel_id=2,
                        owner_id=1000 + i % MEMBERS,
                        is_party=False,
                        image_id=f"img-{i}",
                        dataset_id="ds",
                        state="closed" if state == "submitted" else "open",
                        created_at=created,
                    )
                    .returning(RatingImageRow.id)
                )
            ).scalar_one()
            await session.execute(
                insert(RatingVoteRow).values(
                    image_row_id=image_id,
                    guild_id=1,
                    discord_id=1000 + i % MEMBERS,
                    rating=rng.randrange(1, 11),
                    state=state,
                    attempts=1,
                    created_at=created,
                    updated_at=created + timedelta(seconds=5),
                )
            )
    generation_ratings = args.ratings - votes
    for i in range(generation_ratings):
        created = at(i, generation_ratings)
        async with db.session() as session:
            rating_id = (
                await session.execute(
                    insert(GenerationRatingRow)
                    .values(
                        guild_id=1,
                        discord_id=1000 + i % MEMBERS,
                        request_id=f"{rng.getrandbits(128):032x}",
                        state="submitted" if i < generation_ratings - 5 else "open",
                        preview_urls=[],
                        attempts=1,
                        created_at=created,
                        updated_at=created + timedelta(seconds=5),
                    )
                    .returning(GenerationRatingRow.id)
                )
            ).scalar_one()
            await session.execute(
                insert(GenerationRatingItemRow).values(
                    rating_id=rating_id, position=0, generation_id=f"g-{i}", rating=7, artifacts=0
                )
            )
    return {
        "img2img": img2img,
        "source_kib": round(source_bytes / img2img / 1024, 1) if img2img else 0,
        # What the same sources cost as base64 in job rows, the way they were stored before.
        "old_design_sources_mib": round(source_bytes * 4 / 3 / 1024 / 1024, 1),
    }


async def _insert(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        async with db.session() as session:
            await session.execute(insert(table), rows)
        rows.clear()


async def loop_stalls(stop: asyncio.Event, stalls: list[float], period: float = 0.005) -> None:
    """How late the event loop wakes a 5 ms ticker (what every other coroutine of the bot would suffer)."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(period)
        stalls.append((time.perf_counter() - start - period) * 1000)


async def counts(db: Database) -> dict[str, int]:
    out = {}
    async with db.session() as session:
        for table in (
            "generation_jobs",
            "image_sources",
            "kudos_gifts",
            "rating_votes",
            "generation_ratings",
        ):
            out[table] = int(await session.scalar(select(func.count()).select_from(text(table))) or 0)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="hordebot-retention-"))
    path = folder / "bench.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.connect()
    settings = RetentionSettings()
    clock = SystemClock()
    store = SourceImageStore(db, max_bytes=settings.img2img_sources_max_bytes)
    end = clock.now()
    t0 = time.perf_counter()
    filled = await fill(db, store, args, end)
    fill_s = time.perf_counter() - t0
    await checkpoint(db)
    before = file_mib(path)
    rows_before = await counts(db)
    service = RetentionService(RetentionRepository(db), store, Scheduler(clock), clock, settings)

    stop, stalls = asyncio.Event(), []
    ticker = asyncio.create_task(loop_stalls(stop, stalls))
    t0 = time.perf_counter()
    report = await service.prune()
    prune_s = time.perf_counter() - t0
    stop.set()
    await ticker
    await checkpoint(db)
    after = file_mib(path)
    rows_after = await counts(db)
    over = await service.over_retention()
    async with db.session() as session:
        in_flight = int(
            await session.scalar(
                select(func.count()).select_from(GenerationJobRow).where(GenerationJobRow.state == "waiting")
            )
            or 0
        )
    ok = (
        set(over.values()) == {0}
        and in_flight == 20
        and rows_after["kudos_gifts"] == rows_before["kudos_gifts"]
    )
    await db.close()
    for name in os.listdir(folder):
        (folder / name).unlink()
    folder.rmdir()
    print(f"filled in {fill_s:.1f} s: {filled}")
    print(f"rows before: {rows_before}")
    print(f"rows after:  {rows_after}")
    print(f"deleted: {report.deleted} in {report.batches} batches; pages freed {report.pages_freed}")
    print(f"over retention after the prune: {over}; jobs in flight kept: {in_flight}")
    return {
        "generations": args.generations,
        "gifts": args.gifts,
        "ratings": args.ratings,
        "days": args.days,
        "img2img_source_kib": filled["source_kib"],
        "old_design_sources_mib": filled["old_design_sources_mib"],
        "db_mib_before": before,
        "db_mib_after": after,
        "rows_deleted": report.total,
        "prune_s": round(prune_s, 2),
        "max_loop_stall_ms": round(max(stalls, default=0.0), 1),
        "retention_ok": ok,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10000)
    parser.add_argument("--gifts", type=int, default=5000)
    parser.add_argument("--ratings", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
