"""The same database code on PostgreSQL (asyncpg): migrations and repositories.

CI machines have PostgreSQL installed, and there this test must run: it fails rather than skips when CI is
set. Elsewhere it is skipped with the reason when no PostgreSQL binaries are found.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from bot.db import Database
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.users import UserRepository
from tests.postgres import postgres_server


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        if url is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL binaries are missing on the CI machine")
            pytest.skip("PostgreSQL is not installed on this machine")
        yield url


async def test_migrations_and_repositories_on_postgres(postgres_url: str) -> None:
    db = Database(postgres_url)
    await db.connect()
    try:
        async with db.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert version, "migrations ran"
        users = UserRepository(db)
        linked_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        # Discord ids exceed 32 bits: BIGINT on PostgreSQL.
        await users.upsert(
            discord_id=1456074443980800010,
            horde_user_id=7,
            horde_username="a#7",
            api_key_encrypted="x",
            linked_at=linked_at,
        )
        row = await users.get(1456074443980800010)
        assert row is not None and row.linked_at == linked_at and row.horde_username == "a#7"
        assert [u.discord_id for u in await users.iter_page(0, 10)] == [1456074443980800010]
        assert await users.delete(1456074443980800010)
        settings = GuildSettingsRepository(db)
        await settings.save(5, {"max_n": 4, "blocked_words": ["x"]}, linked_at)
        assert await settings.get(5) == {"max_n": 4, "blocked_words": ["x"]}
    finally:
        await db.close()
    # Starting again on a migrated database is a no-op.
    again = Database(postgres_url)
    await again.connect()
    await again.close()


async def test_rating_claims_are_exclusive_on_postgres(postgres_url: str) -> None:
    """Ten clicks at once: the unique constraint and conditional updates pick one winner on PostgreSQL too."""
    from tests.test_ratings_service import assert_exclusive_claims

    db = Database(postgres_url)
    await db.connect()
    try:
        await assert_exclusive_claims(db)
    finally:
        await db.close()


async def test_kudos_gifts_are_exactly_once_on_postgres(postgres_url: str) -> None:
    """Duplicate reaction events, double finishes, concurrent DM notices and login/lapse races on
    PostgreSQL: the unique dedup key and conditional updates keep every gift to one transfer."""
    from tests.test_kudos_repository import assert_gifts_exactly_once

    db = Database(postgres_url)
    await db.connect()
    try:
        await assert_gifts_exactly_once(db)
    finally:
        await db.close()


async def test_lifecycle_on_postgres(postgres_url: str) -> None:
    """Issue #14 on PostgreSQL: the settings upsert under concurrent first updates, the source store's
    upsert and bound, every retention rule's batched delete, and key rotation's conditional update."""
    import asyncio
    from datetime import timedelta

    from bot.clock import SystemClock
    from bot.db.key_rotation import ENCRYPTED, KeyRotationRepository
    from bot.db.retention import RULES, RetentionRepository
    from bot.db.sources import SourceImageStore
    from bot.services.guild_config import GuildConfigService

    db = Database(postgres_url)
    await db.connect()
    try:
        service = GuildConfigService(GuildSettingsRepository(db), SystemClock())
        await asyncio.gather(service.update(77, max_n=2), service.update(77, cooldown_seconds=9))
        stored = await GuildSettingsRepository(db).get(77)
        assert stored["max_n"] == 2 and stored["cooldown_seconds"] == 9
        now = datetime(2026, 1, 2, tzinfo=UTC)
        store = SourceImageStore(db, max_bytes=250)
        first = await store.put(1, b"a" * 200, now)
        assert await store.put(1, b"a" * 200, now + timedelta(seconds=1)) == first  # stored once
        await store.put(2, b"b" * 200, now + timedelta(seconds=2))
        assert await store.get(first) is None and await store.total_bytes() == 200
        repo = RetentionRepository(db)
        for rule in RULES:
            assert await repo.prune_batch(rule, now + timedelta(days=1), now + timedelta(days=1), 50) >= 0
        assert await store.total_bytes() == 0
        rotation = KeyRotationRepository(db)
        assert await rotation.page(ENCRYPTED[0], None, 10) == []
    finally:
        await db.close()
