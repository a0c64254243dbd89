"""The database code on both engines: the migration chain and the repositories, on SQLite and PostgreSQL.

Every test here is marked `both_engines` (tests/conftest.py): it runs once per engine, each time on a fresh
database. PostgreSQL comes from one throwaway server per pytest process; where none is installed the
PostgreSQL half is skipped with the reason, except under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from bot.db import Database
from bot.db.chat import ChatRepository
from bot.db.database import alembic_config
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.presets import PresetRepository
from bot.db.roles import RoleProblem, RolesRepository, SyncState
from bot.db.safety import SafetyRepository
from bot.db.sharedkeys import SharedKeyRepository
from bot.db.users import UserRepository
from tests.postgres import PostgresServer

pytestmark = pytest.mark.both_engines

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BIG_ID = 1456074443980800010  # Discord ids exceed 32 bits: BIGINT on PostgreSQL


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.connect()
    try:
        yield database
    finally:
        await database.close()


async def _tables(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migration_chain_up_down_up(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Upgrade an empty database to the head, downgrade to base, upgrade again: every migration's downgrade
    undoes its upgrade on both engines."""
    if engine == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.empty_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'chain.db'}"
    database = Database(url)
    await database.connect()  # upgrade from empty
    try:
        head_tables = await _tables(database)
        assert {"users", "guild_settings", "generation_jobs", "kudos_gifts"} <= head_tables

        def downgrade(conn: object) -> None:
            command.downgrade(alembic_config(conn), "base")  # type: ignore[arg-type]

        def upgrade(conn: object) -> None:
            command.upgrade(alembic_config(conn), "heads")  # type: ignore[arg-type]

        async with database.engine.begin() as conn:
            await conn.run_sync(downgrade)
        assert await _tables(database) <= {"alembic_version"}
        async with database.engine.begin() as conn:
            await conn.run_sync(upgrade)
        assert await _tables(database) == head_tables
        async with database.session() as session:
            version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert len(version) == 1
    finally:
        await database.close()
    # Starting again on a migrated database is a no-op.
    again = Database(url)
    await again.connect()
    await again.close()


async def test_users_and_guild_settings(db: Database) -> None:
    users = UserRepository(db)
    await users.upsert(
        discord_id=BIG_ID, horde_user_id=7, horde_username="a#7", api_key_encrypted="x", linked_at=NOW
    )
    row = await users.get(BIG_ID)
    assert row is not None and row.linked_at == NOW and row.horde_username == "a#7"
    assert [u.discord_id for u in await users.iter_page(0, 10)] == [BIG_ID]
    assert await users.delete(BIG_ID)
    assert await users.get(BIG_ID) is None
    settings = GuildSettingsRepository(db)
    await settings.save(BIG_ID, {"max_n": 4, "blocked_words": ["x"]}, NOW)
    assert await settings.get(BIG_ID) == {"max_n": 4, "blocked_words": ["x"]}


async def test_rating_claims_are_exclusive(db: Database) -> None:
    """Ten clicks at once: the unique constraint and conditional updates pick one winner."""
    from tests.test_ratings_service import assert_exclusive_claims

    await assert_exclusive_claims(db)


async def test_kudos_gifts_are_exactly_once(db: Database) -> None:
    """Duplicate reaction events, double finishes, concurrent DM notices and login/lapse races: the unique
    dedup key and conditional updates keep every gift to one transfer."""
    from tests.test_kudos_repository import assert_gifts_exactly_once

    await assert_gifts_exactly_once(db)


async def test_roles_repository(db: Database) -> None:
    roles = RolesRepository(db)
    assert (await roles.sync_state()).cursor == 0
    await roles.save_sync_state(SyncState(cursor=BIG_ID, pass_started_at=NOW, last_finished_at=None))
    await roles.save_sync_state(SyncState(cursor=BIG_ID + 1, pass_started_at=NOW, last_finished_at=NOW))
    assert await roles.sync_state() == SyncState(BIG_ID + 1, NOW, NOW)
    problem = RoleProblem(guild_id=BIG_ID, role_id=BIG_ID + 2, reason="above the bot", noted_at=NOW)
    await roles.save_problem(problem)
    await roles.save_problem(RoleProblem(BIG_ID, BIG_ID + 2, "missing", NOW + timedelta(minutes=1)))
    assert await roles.problems() == [RoleProblem(BIG_ID, BIG_ID + 2, "missing", NOW + timedelta(minutes=1))]
    await roles.clear_problem(BIG_ID, BIG_ID + 2)
    assert await roles.problems() == []
    assert await roles.worker_seen(7) is None
    await roles.mark_worker_seen(7, NOW)
    await roles.mark_worker_seen(7, NOW + timedelta(hours=1))
    assert await roles.worker_seen(7) == NOW + timedelta(hours=1)


async def test_safety_repository(db: Database) -> None:
    safety = SafetyRepository(db)
    assert await safety.last_strike(BIG_ID) is None
    await safety.add_strike(
        user_id=BIG_ID, guild_id=BIG_ID, reason="r", level=1, now=NOW, cooldown_until=NOW + timedelta(hours=1)
    )
    strike = await safety.last_strike(BIG_ID)
    assert strike is not None
    assert await safety.cooldowns_after(NOW) == {BIG_ID: NOW + timedelta(hours=1)}
    await safety.prune_strikes(NOW + timedelta(hours=2))
    assert await safety.last_strike(BIG_ID) is None
    await safety.add_ip_timeout(rc="TimeoutIP", now=NOW, until=NOW + timedelta(minutes=5))
    timeouts = await safety.ip_timeouts_since(NOW - timedelta(minutes=1))
    assert [(t.rc, t.until) for t in timeouts] == [("TimeoutIP", NOW + timedelta(minutes=5))]


async def test_presets_repository(db: Database) -> None:
    presets = PresetRepository(db)
    assert not await presets.save("member", BIG_ID, "Night", {"steps": 20}, NOW)
    assert await presets.save("member", BIG_ID, "night", {"steps": 30}, NOW)  # same name, any case
    assert await presets.count("member", BIG_ID) == 1
    got = await presets.get("member", BIG_ID, "NIGHT")
    assert got is not None and got.options == {"steps": 30}
    assert [p.name for p in await presets.listing("member", BIG_ID)] == ["night"]
    assert await presets.delete("member", BIG_ID, "night")
    assert await presets.count("member", BIG_ID) == 0


async def test_chat_and_shared_key_repositories(db: Database) -> None:
    chats = ChatRepository(db)
    chat = await chats.create(
        guild_id=BIG_ID,
        thread_id=BIG_ID + 1,
        owner_id=BIG_ID + 2,
        model="m",
        max_context_length=1024,
        max_length=80,
        persona="p",
        now=NOW,
    )
    assert (await chats.by_thread(BIG_ID + 1)) == chat
    await asyncio.gather(
        *(chats.add_turn(chat.id, "user", BIG_ID + 2, "ann", f"t{i}", NOW) for i in range(3))
    )
    assert len(await chats.turns(chat.id, 10)) == 3
    await chats.set_active(chat.id, False)
    reread = await chats.get(chat.id)
    assert reread is not None and not reread.active
    await chats.forget_member(BIG_ID + 2)
    assert await chats.get(chat.id) is None

    keys = SharedKeyRepository(db)
    stored = await keys.add(BIG_ID, "team", "enc", NOW)
    assert [k.id for k in await keys.of_owner(BIG_ID)] == [stored.id]
    await keys.set_guild_key(BIG_ID, "team", "enc", BIG_ID, NOW)
    await keys.set_guild_key(BIG_ID, "team2", "enc2", BIG_ID, NOW)
    guild_key = await keys.guild_key(BIG_ID)
    assert guild_key is not None and guild_key.name == "team2"
    assert await keys.clear_guild_key(BIG_ID)
    assert not await keys.clear_guild_key(BIG_ID)
    await keys.forget_member(BIG_ID)
    assert await keys.of_owner(BIG_ID) == []


async def test_lifecycle(db: Database) -> None:
    """Issue #14: the settings upsert under concurrent first updates, the source store's upsert and bound,
    every retention rule's batched delete, and key rotation's conditional update."""
    from bot.clock import SystemClock
    from bot.db.key_rotation import ENCRYPTED, KeyRotationRepository
    from bot.db.retention import RULES, RetentionRepository
    from bot.db.sources import SourceImageStore
    from bot.services.guild_config import GuildConfigService

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
