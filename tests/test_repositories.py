"""The database code on both engines: the migration chain and the repositories, on SQLite and PostgreSQL.

Every test here is marked `both_engines` (tests/conftest.py): it runs once per engine, each time on a fresh
database. PostgreSQL comes from one throwaway server per pytest process; where none is installed the
PostgreSQL half is skipped with the reason, except under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text, update

from bot.db import Database
from bot.db.alchemy_text_jobs import HordeJobRow, JobRepository
from bot.db.chat import ChatRepository
from bot.db.generation import CapReached, GenerationJobRepository, GenerationJobRow, InFlight, JobCaps
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.kudos import KudosRepository
from bot.db.leases import Lease
from bot.db.migrate import alembic_config
from bot.db.migrations import HEADS
from bot.db.models import User
from bot.db.presets import PresetRepository
from bot.db.ratings import RatingsRepository
from bot.db.roles import RoleProblem, RolesRepository, SyncState
from bot.db.safety import Gate, RequestPace, SafetyRepository
from bot.db.sharedkeys import SharedKeyRepository
from bot.db.users import UserRepository
from bot.shards import ShardScope
from tests.postgres import PostgresServer

pytestmark = pytest.mark.both_engines

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BIG_ID = 1456074443980800010  # Discord ids exceed 32 bits: BIGINT on PostgreSQL


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Database]:
    """The bot's `Database` at `url`, connected (migrated to the head) and closed after."""
    database = Database(url)
    await database.connect()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with connected(db_url) as database:
        yield database


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


async def test_the_head_the_bot_knows_is_alembics_and_an_older_database_is_still_migrated(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`Database.connect` skips Alembic for a database storing `HEADS`: that must be the chain's real head,
    and a database one migration behind is still brought up to it."""
    scripts = ScriptDirectory.from_config(alembic_config())  # reads every migration script
    assert set(scripts.get_heads()) == HEADS
    if engine == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.empty_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
    database = Database(url)
    await database.connect()
    (head,) = HEADS
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    async with database.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), previous))
    await database.close()
    again = Database(url)
    await again.connect()
    try:
        async with again.session() as session:
            stored = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await again.close()
    assert set(stored) == HEADS


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


async def test_databases_of_one_process_share_compiled_sql_but_not_rows(
    db: Database, engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The engines of one process share their compiled statements (the test suite opens a database per
    test): a second database runs a statement compiled for the first one, and sees only its own rows."""
    if engine == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.empty_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    other = Database(url)  # migrated from empty by connect()
    await other.connect()
    try:
        await UserRepository(db).upsert(
            discord_id=BIG_ID, horde_user_id=7, horde_username="a#7", api_key_encrypted="x", linked_at=NOW
        )
        query = select(func.count()).select_from(User).where(User.horde_user_id == 7)
        async with db.engine.connect() as conn:
            assert (await conn.execute(query)).scalar() == 1
        async with other.engine.connect() as conn:
            result = await conn.execute(query)
            assert result.context.cache_hit == result.context.dialect.CACHE_HIT
            assert result.scalar() == 0
    finally:
        await other.close()


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
    # What the gate of a process sharing the database reads: her pause, and no IP pause yet.
    assert await safety.gate(BIG_ID, NOW) == Gate(NOW + timedelta(hours=1), None, 0.0)
    assert await safety.gate(BIG_ID + 1, NOW) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID, NOW + timedelta(hours=1)) == Gate(None, None, 0.0), "ended"
    await safety.prune_strikes(NOW + timedelta(hours=2))
    assert await safety.last_strike(BIG_ID) is None
    await safety.add_ip_timeout(rc="TimeoutIP", now=NOW, until=NOW + timedelta(minutes=5))
    timeouts = await safety.ip_timeouts_since(NOW - timedelta(minutes=1))
    assert [(t.rc, t.until) for t in timeouts] == [("TimeoutIP", NOW + timedelta(minutes=5))]
    assert await safety.gate(BIG_ID, NOW) == Gate(None, NOW + timedelta(minutes=5), 0.0)


@pytest.fixture
def shared_url(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.new_database()  # outside the test's event loop (a first template is migrated in one)
    yield url
    postgres.drop_database(url)


@pytest.fixture
async def shared_db(shared_url: str) -> AsyncIterator[Database]:
    """A PostgreSQL database, for what only a database several processes share does."""
    async with connected(shared_url) as database:
        yield database


async def test_a_members_request_pace_on_a_shared_database(shared_db: Database) -> None:
    """Issue #17: the gate's one statement counts a member's requests against their per-minute limit (two
    at once, one more every 10 s), unless a pause runs; /logout forgets the count. PostgreSQL only: SQLite's
    one process counts in memory."""
    db = shared_db
    safety = SafetyRepository(db)
    pace = RequestPace(burst=2, interval=timedelta(seconds=10))
    assert await safety.gate(BIG_ID, NOW, pace) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID, NOW, pace) == Gate(None, None, 0.0)
    # The third waits an interval, less the second of slack for requests' times out of order by a hair.
    assert await safety.gate(BIG_ID, NOW, pace) == Gate(None, None, 9.0)
    assert await safety.gate(BIG_ID + 1, NOW, pace) == Gate(None, None, 0.0), "another member's own"
    later = NOW + timedelta(seconds=10)
    assert await safety.gate(BIG_ID, later, pace) == Gate(None, None, 0.0), "refilled by one"
    assert (await safety.gate(BIG_ID, later, pace)).wait == 9.0
    # A refused request doesn't count: after two intervals both are back.
    assert await safety.gate(BIG_ID, later + timedelta(seconds=20), pace) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID, later + timedelta(seconds=20), pace) == Gate(None, None, 0.0)
    # While a pause runs, nothing is counted: the pause is what the member is told.
    paused_until = NOW + timedelta(hours=1)
    await safety.add_strike(
        user_id=BIG_ID + 2, guild_id=None, reason="r", level=0, now=NOW, cooldown_until=paused_until
    )
    assert await safety.gate(BIG_ID + 2, NOW, pace) == Gate(paused_until, None, 0.0)
    assert await safety.gate(BIG_ID + 2, paused_until, pace) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID + 2, paused_until, pace) == Gate(None, None, 0.0), "her burst was whole"
    # Retention: a pace whose time has passed is a full bucket; /logout forgets the member's.
    from bot.db.retention import RULES, RetentionRepository

    (rule,) = [r for r in RULES if r.name == "safety_request_pace"]
    retention = RetentionRepository(db)
    assert await retention.count(rule, NOW, later + timedelta(seconds=40)) == 1, "only BIG_ID + 1's is full"
    await safety.forget_member(BIG_ID)
    assert await safety.gate(BIG_ID, later + timedelta(seconds=20), pace) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID, later + timedelta(seconds=20), pace) == Gate(None, None, 0.0)


async def test_a_servers_request_pace_on_a_shared_database(shared_db: Database) -> None:
    """The same statement counts the request against the server's limit first: a request either limit
    refuses counts against neither. Retention prunes a server's pace as a member's; /logout leaves it."""
    db = shared_db
    safety = SafetyRepository(db)
    member = RequestPace(burst=1, interval=timedelta(seconds=60))
    guild = (BIG_ID + 100, RequestPace(burst=2, interval=timedelta(seconds=10)))
    assert await safety.gate(BIG_ID, NOW, member, guild) == Gate(None, None, 0.0)
    # Her second is refused by her own limit: the server's count it took is given back...
    assert await safety.gate(BIG_ID, NOW, member, guild) == Gate(None, None, 59.0)
    # ...so one more member fits the server's two, and a third is refused by the server's limit alone.
    assert await safety.gate(BIG_ID + 1, NOW, member, guild) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID + 2, NOW, member, guild) == Gate(None, None, 0.0, server_wait=9.0)
    # Refused by the server, not counted against her: in another server (or a DM) she may send.
    assert await safety.gate(BIG_ID + 2, NOW, member) == Gate(None, None, 0.0)
    assert await safety.gate(BIG_ID + 3, NOW + timedelta(seconds=10), member, guild) == Gate(None, None, 0.0)
    from bot.db.retention import RULES, RetentionRepository

    (rule,) = [r for r in RULES if r.name == "safety_request_pace"]
    retention = RetentionRepository(db)
    # Past +30 s the server's bucket (three counted, from NOW) is full again; the members' (a minute
    # each) are not.
    assert await retention.count(rule, NOW, NOW + timedelta(seconds=31)) == 1
    await safety.forget_member(BIG_ID + 100)  # a server's id is no member's: nothing forgotten
    assert await retention.count(rule, NOW, NOW + timedelta(days=1)) == 5


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


# --- leases: work several processes share (issue #17) -----------------------------------------------------


def _image_job(
    repo: GenerationJobRepository, now: datetime, *, user: int = BIG_ID, caps: JobCaps | None = None
) -> Any:
    return repo.create(
        user_id=user,
        guild_id=BIG_ID + 1,
        channel_id=BIG_ID + 2,
        private=False,
        anonymous=False,
        key_source="own",
        payload={"prompt": "a lighthouse"},
        notice=None,
        style=None,
        model=None,
        now=now,
        caps=caps,
    )


async def test_leases_claim_renew_and_take_over_a_dead_processs_jobs(db: Database) -> None:
    """A job is held by the process that made it: the other process can neither claim it nor move it
    while the lease is renewed; once renewals stop and the lease runs out it takes the job over, and the
    first holder's stale writes (a check, the delivery) are refused. Only one of them can end it."""
    a = GenerationJobRepository(db, Lease("proc-a", 30))
    b = GenerationJobRepository(db, Lease("proc-b", 30))
    job = await _image_job(a, NOW)
    assert await b.claim_active(NOW) == [] and not await b.unheld(NOW)
    assert not await b.set_state(job.id, "submitting", NOW)
    assert await a.set_state(job.id, "submitting", NOW)
    assert await a.submitted(job.id, "horde-1", 10.0, NOW)
    assert await a.leases.renew(NOW + timedelta(seconds=25)) == 1  # held until +55 s
    assert await b.claim_active(NOW + timedelta(seconds=40)) == []
    assert not await b.unheld(NOW + timedelta(seconds=40))
    # Process a stops renewing (killed): after its lease runs out, b takes the job over.
    later = NOW + timedelta(seconds=56)
    assert await b.unheld(later)
    (taken,) = await b.claim_active(later)
    assert (taken.id, taken.state, taken.horde_id) == (job.id, "waiting", "horde-1")
    assert not await b.unheld(later)
    assert not await a.hold(job.id, later)  # a wakes up: not its job any more
    assert not await a.finish(job.id, "done", later, images=1)  # nor its delivery
    assert await b.hold(job.id, later)
    assert await b.finish(job.id, "done", later, images=1)
    assert not await b.finish(job.id, "done", later, images=1)  # ended once
    assert await b.leases.renew(later) == 0  # ending released it
    # A restart under the same name resumes its own jobs at once, lease or not.
    mine = await _image_job(a, later)
    assert [j.id for j in await a.claim_active(later)] == [mine.id]


async def test_a_job_stored_within_caps(db: Database) -> None:
    """`create` with caps (a shared database): refused, and nothing stored, when the member's cooldown runs
    since their newest job in any process, or the member's or the server's jobs in flight are at the cap."""
    a = GenerationJobRepository(db, Lease("proc-a", 30))
    b = GenerationJobRepository(db, Lease("proc-b", 30))
    await _image_job(a, NOW)

    def store(repo: GenerationJobRepository, caps: JobCaps, now: datetime, user: int = BIG_ID) -> Any:
        return _image_job(repo, now, user=user, caps=caps)

    with pytest.raises(CapReached) as cooldown:
        await store(b, JobCaps(per_member=5, per_server=5, cooldown_seconds=10), NOW + timedelta(seconds=4))
    assert (cooldown.value.limit, cooldown.value.wait_seconds) == ("cooldown", 6.0)
    later = NOW + timedelta(seconds=11)
    second = await store(b, JobCaps(per_member=2, per_server=5, cooldown_seconds=10), later)
    with pytest.raises(CapReached) as member:
        await store(a, JobCaps(per_member=2, per_server=5, cooldown_seconds=0), later)
    assert (member.value.limit, member.value.count) == ("member", 2)
    with pytest.raises(CapReached) as server:
        await store(a, JobCaps(per_member=2, per_server=2, cooldown_seconds=0), later, user=BIG_ID + 7)
    assert (server.value.limit, server.value.count) == ("server", 2)
    assert [j.id for j in await a.active()] == [second.id - 1, second.id], "the refused ones not stored"
    # Without caps (SQLite's one process: its own reservation held the slot) it is stored as it is.
    assert (await _image_job(a, later)).state == "queued"


async def test_jobs_cut_off_delivering_and_in_flight_elsewhere(db: Database) -> None:
    """The job engine's writes for a stop between a POST and its answer (`cut_off`), and between marking a
    result and posting it (`delivering`), held-only like every write; and what the caps read of the jobs
    other processes hold (`in_flight_elsewhere`)."""
    a = GenerationJobRepository(db, Lease("proc-a", 30))
    b = GenerationJobRepository(db, Lease("proc-b", 30))
    job = await _image_job(a, NOW)
    assert not await a.cut_off(job.id, NOW), "only a `submitting` row is cut off"
    assert await a.set_state(job.id, "submitting", NOW)
    assert not await b.cut_off(job.id, NOW), "not b's"
    assert await a.cut_off(job.id, NOW)
    again = await a.get(job.id)
    assert again is not None and (again.state, again.interrupted_sends) == ("queued", 1)
    assert await a.set_state(job.id, "submitting", NOW) and await a.submitted(job.id, "horde-1", 1.0, NOW)
    assert not await b.delivering(job.id, NOW)
    assert await a.delivering(job.id, NOW)
    assert [j.state for j in await a.active()] == ["delivering"], "still in flight"
    # The caps: b sees a's job of this member and this server, a doesn't count its own from here; the
    # member's newest job after the asked time is seen by both.
    before = NOW - timedelta(seconds=10)
    assert await b.in_flight_elsewhere(BIG_ID, BIG_ID + 1, before) == InFlight(1, 1, NOW)
    assert await b.in_flight_elsewhere(BIG_ID, None, before) == InFlight(1, 0, NOW)
    assert await b.in_flight_elsewhere(BIG_ID + 5, BIG_ID + 1, before) == InFlight(0, 1, None)
    assert await a.in_flight_elsewhere(BIG_ID, BIG_ID + 1, before) == InFlight(0, 0, NOW)
    assert await b.in_flight_elsewhere(BIG_ID, BIG_ID + 1, NOW) == InFlight(1, 1, None), "none after NOW"
    assert await a.finish(job.id, "done", NOW, images=1, result_message_id=7)
    assert await b.in_flight_elsewhere(BIG_ID, BIG_ID + 1, before) == InFlight(0, 0, NOW), (
        "ended: not counted"
    )
    texts = JobRepository(db, Lease("proc-a", 30))
    text_job = await texts.create(
        kind="text",
        user_id=BIG_ID,
        guild_id=None,
        channel_id=None,
        payload={"prompt": "hi"},
        key_source="own",
        now=NOW,
        deadline_at=NOW + timedelta(minutes=20),
    )
    assert await texts.set_state(text_job.id, "submitting", NOW) and await texts.cut_off(text_job.id, NOW)
    got = await texts.get(text_job.id)
    assert got is not None and (got.state, got.interrupted_sends) == ("queued", 1)
    assert await texts.set_state(text_job.id, "submitting", NOW)
    assert await texts.submitted(text_job.id, "horde-2", NOW, NOW + timedelta(minutes=20))
    assert await texts.delivering(text_job.id, NOW)
    assert [j.state for j in await texts.active(["text"])] == ["delivering"]


async def test_leases_two_processes_claiming_at_once_take_different_rows(db: Database) -> None:
    """Unheld work (an earlier process's, released on shutdown) claimed by two processes at the same
    moment: every row goes to exactly one of them (PostgreSQL: FOR UPDATE SKIP LOCKED)."""
    maker = JobRepository(db, Lease("maker", 30))
    for n in range(12):
        await maker.create(
            kind="text",
            user_id=BIG_ID + n,
            guild_id=None,
            channel_id=None,
            payload={"prompt": str(n)},
            key_source="own",
            now=NOW,
            deadline_at=NOW + timedelta(minutes=20),
        )
    assert await maker.leases.release_all() == 12
    holders = [JobRepository(db, Lease(f"proc-{n}", 30)) for n in range(3)]
    queued = HordeJobRow.state == "queued"
    claimed = await asyncio.gather(*(h.leases.claim(NOW, queued, limit=4) for h in holders))
    assert [len(ids) for ids in claimed] == [4, 4, 4]
    every = [i for ids in claimed for i in ids]
    assert sorted(every) == [j.id for j in await maker.active(["text"])]  # each row to exactly one
    for holder, ids in zip(holders, claimed, strict=True):
        assert [j.id for j in await holder.claim_active(["text"], NOW)] == ids  # its own, nobody else's


async def test_a_lease_renewal_skips_rows_another_transaction_holds_instead_of_deadlocking(
    shared_db: Database,
) -> None:
    """Seen in test_scale: the keeper's renewal (one UPDATE over this process's rows, locking them in the
    table's order) and a transaction locking two of the same rows in the other order (a hold batch) each
    waited for the other: PostgreSQL's "deadlock detected" failed one of them. The renewal now skips the
    rows locked at that moment; the next renewal extends them."""
    a = GenerationJobRepository(shared_db, Lease("proc-a", 30))
    first, second = [await _image_job(a, NOW, user=BIG_ID + n) for n in range(2)]
    rows = GenerationJobRow
    async with shared_db.write_session() as other:
        # Another transaction of the process locks the second row, then (below) the first.
        await other.execute(update(rows).where(rows.id == second.id).values(updated_at=NOW))
        renewal = asyncio.create_task(a.leases.renew(NOW + timedelta(seconds=10)))
        done, _ = await asyncio.wait([renewal], timeout=5)
        # Without skipping, the renewal holds the first row and waits for the second: this UPDATE then
        # waits for the renewal, and PostgreSQL breaks the cycle by failing one of them.
        await other.execute(update(rows).where(rows.id == first.id).values(updated_at=NOW))
    assert done and renewal.result() == 1  # the first row renewed; the locked one skipped
    async with shared_db.session() as session:
        leases = {row_id: until for row_id, until in await session.execute(select(rows.id, rows.lease_until))}
    assert leases == {first.id: NOW + timedelta(seconds=40), second.id: NOW + timedelta(seconds=30)}
    assert await a.leases.renew(NOW + timedelta(seconds=20)) == 2  # nothing locked now: both


async def test_leases_on_gifts_and_rating_submissions(db: Database) -> None:
    """A queued gift is sent by the process holding it (another process's lane finds nothing to send);
    after its holder dies it is taken over; sending it releases it. Rating submissions cut off by a
    crash are retried by one process only."""
    from tests.test_kudos_repository import _gift

    a, b = KudosRepository(db, Lease("proc-a", 30)), KudosRepository(db, Lease("proc-b", 30))
    (gift,) = await a.add_many([_gift(11, 500)], NOW)
    assert gift is not None
    assert await b.due(NOW) == [] and await b.next_due(11, NOW) is None and not await b.unheld(NOW)
    assert [g.id for g in await a.due(NOW)] == [gift.id]
    assert await a.hold(gift.id, NOW) and not await b.hold(gift.id, NOW)
    later = NOW + timedelta(seconds=31)
    assert await b.unheld(later)
    taken = await b.next_due(11, later)
    assert taken is not None and taken.id == gift.id
    assert not await a.hold(gift.id, later)  # a's lane would have sent it: it is b's now
    assert await b.mark_sent(gift.id, "{}", later)
    assert await b.leases.renew(later) == 0
    # One giver's gifts recorded by two processes go out in order: b's newer gift waits while a holds an
    # older one (a retry later), and is sent after a's once a dies.
    (older,) = await a.add_many([_gift(12, 501)], NOW)
    (newer,) = await b.add_many([_gift(12, 502)], NOW)
    assert older is not None and newer is not None
    assert await a.retry_at(older.id, NOW + timedelta(seconds=20), "outage", "down", NOW)
    assert await b.next_due(12, NOW + timedelta(seconds=1)) is None
    first = await b.next_due(12, NOW + timedelta(seconds=40))
    assert first is not None and first.id == older.id
    ratings_a, ratings_b = (
        RatingsRepository(db, Lease("proc-a", 30)),
        RatingsRepository(db, Lease("proc-b", 30)),
    )
    image = await ratings_a.add_image(
        guild_id=1,
        channel_id=2,
        owner_id=BIG_ID,
        image_id="img",
        dataset_id=None,
        requested_dataset=None,
        now=NOW,
    )
    vote = await ratings_a.create_vote(
        image_row_id=image.id, guild_id=1, discord_id=BIG_ID, rating=7, now=NOW
    )
    assert vote is not None
    assert await ratings_a.claim_vote(vote.id, ["choosing"], NOW)  # submitting, held by a
    assert await ratings_b.claim_unfinished(NOW) == ([], [])  # a's submission is in flight
    assert not await ratings_b.claim_vote(vote.id, ["submitting"], NOW)
    assert await ratings_b.claim_unfinished(later) == ([vote.id], [])  # a died mid-submission
    assert await ratings_a.claim_unfinished(later) == ([], [])


async def test_role_sync_cursor_per_shard_set(db: Database) -> None:
    """Two processes on different shards walk the members each for their own servers: one cursor each."""
    one = RolesRepository(db, ShardScope(4, (0, 1)).key)
    other = RolesRepository(db, ShardScope(4, (2, 3)).key)
    await one.save_sync_state(SyncState(cursor=10, pass_started_at=NOW, last_finished_at=None))
    await other.save_sync_state(SyncState(cursor=20, pass_started_at=NOW, last_finished_at=None))
    await one.save_sync_state(SyncState(cursor=11, pass_started_at=NOW, last_finished_at=None))
    assert (await one.sync_state()).cursor == 11 and (await other.sync_state()).cursor == 20
    assert (await RolesRepository(db).sync_state()).cursor == 0  # a single process's own
