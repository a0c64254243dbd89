"""Retention (issue #14): img2img sources kept apart and briefly, and the scheduled, batched prune."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.config import ConfigError, Settings
from bot.db import Database
from bot.db.migrate import alembic_config
from bot.db.sources import SourceImageStore
from bot.services.retention import RetentionSettings
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, run_as_bot, run_harness
from tests.test_generation import finish, generate, png, rows

DAY = 86400.0


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    return make_settings(
        tmp_path,
        horde.base_url,
        generation_jobs={"cooldown_seconds": 0},
        retention={"batch_size": 10, "batch_pause_seconds": 0},
    )


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


async def count(h: Harness, table: str) -> int:
    async with h.runtime.db.session() as session:
        return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608


async def prune(h: Harness, **kwargs: Any) -> Any:
    return await run_as_bot(h, h.services.retention.prune(**kwargs))


async def test_img2img_source_lives_apart_and_regenerate_says_when_it_is_gone(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, image=("boat.png", png(96, 64)), strength=0.5)
    first = horde.last_request("image")
    sent_source = first.payload["source_image"]
    assert sent_source
    await finish(h, horde)
    done = reply.latest()
    assert "Source image" in done.text and "Kept 3 days" in done.text
    # The job row carries no base64 source; the store holds the bytes once.
    (row,) = await rows(h)
    assert "source_image" not in str(row["payload"]) and row["source_id"] is not None
    assert await count(h, "image_sources") == 1

    assert done.message is not None
    again = await alice.click(done.message, label="Regenerate")
    assert not again.private
    assert horde.last_request("image").payload["source_image"] == sent_source
    await finish(h, horde)
    assert await count(h, "image_sources") == 1  # the same image is stored once

    h.clock.shift(4 * DAY)
    report = await prune(h)
    assert report.deleted.get("image_sources") == 1
    posts = horde.count("POST", r"/generate/async")
    gone = await alice.click(done.message, label="Regenerate")
    assert gone.private
    assert "no longer kept" in gone.text and "attach the image" in gone.text
    assert horde.count("POST", r"/generate/async") == posts


async def test_prune_deletes_what_retention_allows_and_nothing_in_use(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice = h.member("alice")
    await generate(alice, prompt="old one")
    await finish(h, horde)
    h.clock.shift(31 * DAY)
    await generate(alice, prompt="recent one")
    await finish(h, horde)
    in_flight = await generate(alice, prompt="still running")
    assert in_flight.deferred
    await prune(h)
    remaining = {r["state"] for r in await rows(h)}
    prompts = [str(r["payload"]) for r in await rows(h)]
    assert not any("old one" in p for p in prompts)
    assert any("recent one" in p for p in prompts) and any("still running" in p for p in prompts)
    assert "waiting" in remaining
    # Nothing left over the retention anywhere.
    assert set((await h.services.retention.over_retention()).values()) == {0}


@pytest.mark.parametrize(
    ("retention", "kept_days"),
    [({}, 30), ({"ratings": 7}, 7), ({"rating_images": 10, "ratings": 0}, 10), ({"rating_images": 0}, 30)],
)
async def test_served_images_nobody_rated_go_after_rating_images_days_or_sooner_with_ratings(
    tmp_path: Path, horde: FakeHorde, retention: dict[str, int], kept_days: int
) -> None:
    # Once the ratings service's own prune ([ratings] keep_days, still read as [retention] rating_images):
    # now a retention rule like every table's. Open images and rated ones stay.
    settings = make_settings(tmp_path, horde.base_url, retention={"batch_pause_seconds": 0, **retention})
    async with run_harness(settings) as h:
        repo = h.services.ratings._repo
        now = h.clock.now()

        async def served(age_days: int, *, still_open: bool = False, rated: bool = False) -> int:
            image = await repo.add_image(
                guild_id=None,
                channel_id=None,
                owner_id=7,
                image_id=f"img-{age_days}-{still_open}-{rated}",
                dataset_id=None,
                requested_dataset=None,
                now=now - timedelta(days=age_days),
            )
            if not still_open:
                assert await repo.move_on(image.id)
            if rated:
                await repo.create_vote(image_row_id=image.id, guild_id=None, discord_id=7, rating=5, now=now)
            return image.id

        old = await served(kept_days + 1)
        young = await served(kept_days - 1)
        kept = [young, await served(kept_days + 1, still_open=True), await served(kept_days + 1, rated=True)]
        report = await prune(h)
        assert report.deleted.get("rating_images") == 1
        assert await repo.get_image(old) is None
        assert [await repo.get_image(image) is not None for image in kept] == [True, True, True]
        assert (await h.services.retention.over_retention())["rating_images"] == 0


async def test_prune_runs_in_batches_and_resumes(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    now = h.clock.now() - timedelta(days=40)
    repo = h.services.generation._jobs
    for i in range(25):
        job = await repo.create(
            user_id=1000 + i,
            guild_id=None,
            channel_id=None,
            private=False,
            anonymous=True,
            key_source="anon",
            payload={"prompt": f"p{i}"},
            notice=None,
            style=None,
            model=None,
            now=now,
        )
        await repo.finish(job.id, "done", now, images=1)
    first = await prune(h, max_batches=1)
    assert not first.complete and first.deleted == {"generation_jobs": 10}
    assert await count(h, "generation_jobs") == 15
    second = await prune(h)
    assert second.complete and second.deleted.get("generation_jobs") == 15
    assert await count(h, "generation_jobs") == 0


async def test_source_store_is_bounded(harness: Harness) -> None:
    store = SourceImageStore(harness.runtime.db, max_bytes=1_000_000)
    now = harness.clock.now()
    ids = []
    for i in range(3):
        ids.append(await store.put(7, os.urandom(400_000) + bytes([i]), now + timedelta(seconds=i)))
    assert await store.total_bytes() <= 1_000_000
    assert await store.get(ids[0]) is None  # the least recently used went first
    assert await store.get(ids[2]) is not None
    await store.forget_member(7)
    assert await store.total_bytes() == 0


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"finished_jobs": -1}, "retention.finished_jobs"),
        ({"img2img_sources": 0}, "retention.img2img_sources"),
        ({"batch_size": 1}, "retention.batch_size"),
        ({"chat": "30"}, "retention.chat"),
    ],
)
def test_bad_retention_settings_name_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        RetentionSettings.from_section(section)
    assert err.value.key == key


def test_retention_defaults() -> None:
    s = RetentionSettings.from_section({})
    assert (s.finished_jobs, s.chat, s.ratings, s.safety_incidents) == (30, 30, 30, 90)
    assert s.rating_images == 30  # as `[ratings] keep_days` was
    assert s.kudos_ledger == 365


async def test_migration_takes_old_base64_sources_out_of_job_rows(tmp_path: Path) -> None:
    """A database from before #14 (sources as base64 in the payload) is stripped at start-up."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0014"))
        for i, payload in enumerate(
            [
                {"prompt": "boat", "source_image": "UklGR" * 1000, "source_processing": "img2img"},
                {"prompt": "x"},
            ]
        ):
            await conn.execute(
                text(
                    "INSERT INTO generation_jobs (user_id, private, anonymous, key_source, payload, state, "
                    "kudos, images, created_at, updated_at) VALUES (:u, 0, 0, 'user', :p, 'done', 0, 1, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"u": 10 + i, "p": json.dumps(payload)},
            )
    await engine.dispose()
    db = Database(url)
    await db.connect()
    try:
        async with db.session() as session:
            rows = (
                await session.execute(text("SELECT payload, source_id FROM generation_jobs ORDER BY id"))
            ).all()
        first, second = (json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows)
        assert "source_image" not in first and first["source_processing"] == "img2img"
        assert second == {"prompt": "x"}
        assert all(r[1] is None for r in rows)
    finally:
        await db.close()
