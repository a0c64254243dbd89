"""Issue #17: a bot process told to stop (SIGTERM: `docker compose stop`, a rolling restart) while it is
handling members' events. It takes no new event, lets the ones it is handling finish, and only then stops
its background work and closes the database: members get their answers, what they did is stored, and
nothing is logged as an error.

The tests hold a handler mid-way from outside the bot (the fake Horde holding an answer, the test's own
transaction holding a row the handler writes) until the process has begun to stop, then let it go on; or
stop the process while it is still starting.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.services.kudos import reaction_dedup_key
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.horde import FakeHorde
from tests.postgres import PostgresServer
from tests.support.cluster import KUDOS_EMOJI, Cluster, build_world, set_up, start_processes
from tests.support.run_py import DISCORD_TOKEN, BotProcess, bot_env, run_bot, smoke_config, write_config

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

# Generous, so that the test decides when the held handler goes on (not a timing assertion).
GRACE = 120.0
CUT_OFF = 0.5  # a grace a held handler outlasts
WAIT = 120.0  # seconds any one step may take on a loaded machine before the test gives up
STOPPING = "shutting down"  # run.py's line when a signal arrives


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    # A held handler answers late: Discord's 3-second rule is not what these tests are about.
    fake = FakeDiscord(token=DISCORD_TOKEN, ack_timeout=None)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)


def one_process(cluster: Cluster) -> dict[str, list[int]]:
    return {"bot": [server.shard for server in cluster.servers]}


def settings(grace: float = GRACE) -> dict[str, dict[str, float]]:
    return {"discord": {"shutdown_grace": grace}}


def clean(process: BotProcess) -> None:
    """Nothing logged as an error or with a traceback (the lines the process wrote on its way out)."""
    problems = [line for line in process.output.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not problems, process.report()


@pytest.mark.both_engines
async def test_a_command_being_handled_when_the_bot_is_told_to_stop_is_answered_and_stored(
    tmp_path: Path, db_url: str, fake: FakeDiscord, horde: FakeHorde
) -> None:
    cluster = build_world(fake, horde, shard_count=1, members=2, authors=0)
    server = cluster.servers[0]
    alice, bob = server.members
    secret = Fernet.generate_key().decode()
    async with start_processes(
        tmp_path, cluster, db_url, one_process(cluster), secret, overrides=settings()
    ) as processes:
        bot = processes["bot"]
        opened = await fake.send_slash(server.guild.id, server.channel.id, alice.id, "login")
        await cluster.until(lambda: opened.callback is not None, "the /login form", WAIT)
        # The Horde is slow to check alice's key: her /login is mid-way when the bot is told to stop.
        held = horde.inject(r"/find_user$", delay=math.inf)
        submitted = await fake.submit_modal(opened, {"login:apikey": cluster.accounts[alice.id].apikey or ""})
        await cluster.until(lambda: held.hits == 1, "the bot asking the Horde about alice's key", WAIT)
        bot.stop()
        await cluster.until(lambda: STOPPING in bot.output, "the bot to begin stopping", WAIT)
        # Stopping, it takes nothing new: bob's command is never started.
        late = await fake.send_slash(server.guild.id, server.channel.id, bob.id, "terms")
        horde.release_delays()
        code = await bot.exited(WAIT)

    assert code == 0, bot.report()
    answer = [m.text for m in submitted.messages if not m.loading and not m.deleted]
    assert answer and cluster.accounts[alice.id].username in answer[-1], bot.report()
    assert late.callback is None and not late.messages
    clean(bot)
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            linked = await conn.scalar(
                text("SELECT count(*) FROM users WHERE discord_id = :id"), {"id": alice.id}
            )
    finally:
        await engine.dispose()
    assert linked == 1


async def held_insert(conn: AsyncConnection, dedup_key: str) -> None:
    """In the test's own open transaction, a gift row with this dedup key: PostgreSQL makes another
    transaction inserting the same key wait until this one ends (rolled back: that insert then goes in)."""
    await conn.execute(
        text(
            "INSERT INTO kudos_gifts (dedup_key, idempotency_key, source, emoji, giver_id, receiver_id, "
            "amount, state, attempts, created_at, updated_at) VALUES (:key, 'held by the test', 'reaction', "
            "'', 1, 2, 1, 'queued', 0, now(), now())"
        ),
        {"key": dedup_key},
    )


@pytest.mark.parametrize("grace", [GRACE, CUT_OFF], ids=["finished in the grace", "cut off after the grace"])
async def test_a_reaction_gift_mid_query_when_the_bot_is_told_to_stop(
    tmp_path: Path, postgres_url: str, fake: FakeDiscord, horde: FakeHorde, grace: float
) -> None:
    """The case of the traceback under load (asyncpg's connection closing as the event loop ended, the
    handler still in its INSERT): the gift's INSERT waits on the test's transaction when the bot is told to
    stop. Released within `discord.shutdown_grace`, it completes and the gift is stored (sent, or queued for
    the next start). Still waiting when the grace runs out, the handler is stopped mid-query (its
    transaction rolls back: the reaction is lost, as one heard just before a crash) and the bot says so, in
    a warning: no traceback, no error, exit code 0."""
    cluster = build_world(fake, horde, shard_count=1, members=1, authors=1)
    server = cluster.servers[0]
    (giver,), (author,) = server.members, server.authors
    secret = Fernet.generate_key().decode()
    engine = create_async_engine(postgres_url)
    try:
        async with start_processes(
            tmp_path, cluster, postgres_url, one_process(cluster), secret, overrides=settings(grace)
        ) as processes:
            bot = processes["bot"]
            await set_up(cluster)
            (post,) = server.posts
            key = reaction_dedup_key(server.guild.id, post.id, giver.id, KUDOS_EMOJI)
            async with engine.connect() as holder, engine.connect() as watcher:
                transaction = await holder.begin()
                await held_insert(holder, key)

                async def waiting() -> bool:
                    found = await watcher.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE 'INSERT INTO kudos_gifts%'"
                        )
                    )
                    await watcher.commit()
                    return bool(found)

                await fake.add_reaction(post, KUDOS_EMOJI, giver.id)
                await cluster.until(waiting, "the gift's INSERT waiting for the test's row", WAIT)
                bot.stop()
                await cluster.until(lambda: STOPPING in bot.output, "the bot to begin stopping", WAIT)
                if grace == CUT_OFF:
                    code = await bot.exited(WAIT)
                await transaction.rollback()
            if grace != CUT_OFF:
                code = await bot.exited(WAIT)
        assert code == 0, bot.report()
        clean(bot)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT state, receiver_id, claimed_by FROM kudos_gifts WHERE dedup_key = :key"),
                    {"key": key},
                )
            ).all()
        stopped = [line for line in bot.output.splitlines() if "still running after" in line]
        if grace == CUT_OFF:
            assert len(stopped) == 1 and "on_raw_reaction_add" in stopped[0], bot.report()
            assert rows == []
            return
        assert not stopped, bot.report()
        # Sent, or queued and held by nobody: the next process to look sends it.
        assert len(rows) == 1, rows
        state, receiver, claimed_by = rows[0]
        assert receiver == author.id
        assert state == "sent" or (state == "queued" and claimed_by is None), rows[0]
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "moment",
    ["Running upgrade", "logging in using static token"],
    ids=["migrating the database", "logging in and syncing the commands"],
)
async def test_a_bot_told_to_stop_while_it_starts_stops_cleanly(
    tmp_path: Path, fake: FakeDiscord, horde: FakeHorde, moment: str
) -> None:
    """A stop at any moment of start-up (a restart loop, `docker compose down` right after `up`) ends the
    process with 0 and nothing logged as an error. The signal closed the bot at once: under its migration
    (releasing leases on tables not made yet) or its command sync ("Session is closed"), with a traceback."""
    assert horde.base_url is not None
    config = write_config(tmp_path / "config.toml", smoke_config(tmp_path, fake, horde.base_url))
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=Fernet.generate_key().decode())
    async with run_bot(config, tmp_path, env) as bot:
        await bot.until(logged(bot, moment), f"run.py's {moment!r} line")
        bot.stop()
        code = await bot.exited(WAIT)
    assert code == 0, bot.report()
    assert STOPPING in bot.output
    clean(bot)


async def logged(bot: BotProcess, line: str) -> None:
    while line not in bot.output:
        await asyncio.sleep(0.01)
