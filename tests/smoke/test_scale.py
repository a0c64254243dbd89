"""Issue #17: the two bot processes of docker-compose.yml, two shards each, started as real `run.py`
processes with the configs the compose file mounts (no Docker engine runs here), on one PostgreSQL
database. One is killed with SIGKILL mid-way; the survivor takes over its work when the leases expire, and
members see every result once and every gift paid once.

Behaviour, not timing: the test waits for what members see (result messages in the fake Discord, kudos on
the fake Horde) and for the database to say nothing is left to do, then counts. The processes' speed only
changes how long it waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.horde import FakeHorde
from tests.postgres import PostgresServer
from tests.support.cluster import (
    GIFT,
    STEP,
    build_world,
    compose_processes,
    finish,
    generate_all,
    set_up,
    start_processes,
    thank_all,
)
from tests.support.run_py import DISCORD_TOKEN

# The waits below are generous (a loaded machine is slow, not wrong): the test is allowed their sum.
pytestmark = [pytest.mark.processes, pytest.mark.timeout(1200)]

MEMBERS = 13  # per server, one server per shard: 4 x 13 = 52 generations
AUTHORS = 4  # per server: 4 x 13 members x 4 authors = 208 kudos reactions
SETTLED = 300.0  # seconds allowed for everything to be delivered and paid (lease 3 s; a loaded CI machine)
STOPPED = 120.0  # seconds the survivor may take to stop after SIGTERM (it lets running handlers finish)


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    # The Horde's limits are the pacer's business (tests/test_pacer.py); here they would only slow the test.
    horde.enforce_rate_limits = False


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own connection to the processes' shared database, to read what is left to do."""
    engine = create_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def work_left(database: AsyncEngine) -> dict[str, int]:
    """Generation jobs and gifts not finished yet, and gifts recorded (one per reaction heard)."""
    async with database.connect() as conn:
        jobs = await conn.scalar(text("SELECT count(*) FROM generation_jobs WHERE state <> 'done'"))
        gifts = await conn.scalar(text("SELECT count(*) FROM kudos_gifts WHERE state <> 'sent'"))
        recorded = await conn.scalar(text("SELECT count(*) FROM kudos_gifts"))
    return {"jobs": int(jobs or 0), "gifts": int(gifts or 0), "gifts recorded": int(recorded or 0)}


async def all_recorded(database: AsyncEngine, gifts: int) -> bool:
    return (await work_left(database))["gifts recorded"] >= gifts


async def settled(database: AsyncEngine, done: dict[str, int]) -> bool:
    return await work_left(database) == done


async def test_a_process_killed_mid_way_and_the_survivor_delivers_and_pays_everything_once(
    tmp_path: Path, database_url: str, database: AsyncEngine, horde: FakeHorde
) -> None:
    # Fifty members answer at once on a loaded machine: Discord's 3-second rule is not what this proves.
    fake = FakeDiscord(token=DISCORD_TOKEN, ack_timeout=None)
    deployed = compose_processes()
    layout = {name: config["discord"]["shard_ids"] for name, config in deployed.items()}
    assert layout == {"bot-a": [0, 1], "bot-b": [2, 3]}
    shard_count = deployed["bot-a"]["discord"]["shard_count"]
    cluster = build_world(fake, horde, shard_count=shard_count, members=MEMBERS, authors=AUTHORS)
    reactions = shard_count * MEMBERS * AUTHORS
    secret_key = Fernet.generate_key().decode()
    await fake.start()
    try:
        async with start_processes(tmp_path, cluster, database_url, layout, secret_key, deployed):
            await set_up(cluster)
            await generate_all(cluster)
            await cluster.until(
                lambda: len(horde.jobs) == shard_count * MEMBERS, "every request at the Horde", STEP
            )

            # Mid-way: each process has delivered some results and is still waiting for the others.
            early = [p for server in cluster.servers for p in server.prompts[:5]]
            finish(horde, early)
            await cluster.until(lambda: all(cluster.results(p) for p in early), "the first results", STEP)

            # 200 reactions. bot-b dies once every reaction is recorded (a process killed before it handled a
            # gateway event loses it, as on Discord) and its first gifts are paid: each member's gifts go one
            # a second, so most of bot-b's are still queued, held by bot-b, when it dies.
            await thank_all(cluster)
            await cluster.until(lambda: all_recorded(database, reactions), "every reaction recorded", STEP)
            second_authors = [a.id for s in cluster.servers if s.shard in layout["bot-b"] for a in s.authors]
            await cluster.until(
                lambda: any(cluster.received()[a] for a in second_authors), "bot-b paying gifts", STEP
            )
            await cluster.kill("bot-b")
            finish(horde, [p for server in cluster.servers for p in server.prompts])

            # bot-a alone: its own work, then bot-b's once bot-b's leases expire. Done when the database has
            # nothing left to do (a gift bot-b paid just before dying is marked sent only after the takeover):
            # nothing can be posted or paid after that, so the counts below are final.
            done = {"jobs": 0, "gifts": 0, "gifts recorded": reactions}
            await cluster.until(
                lambda: settled(database, done), "every job done and every gift sent", SETTLED
            )
            code = await cluster.processes["bot-a"].terminate(STOPPED)
            assert code == 0, cluster.processes["bot-a"].report()

        # Every generation: one live request at the Horde, its result posted once. A process that stalls
        # past its lease (a loaded machine, lease 3 s) while its POST is on its way sees the job taken over
        # and sent again by the other; it then cancels the request it made, which nobody would collect.
        prompts = Counter(p for s in cluster.servers for p in s.prompts)
        assert Counter(r.prompt for r in horde.jobs if not r.cancelled) == prompts
        assert set(cluster.horde_prompts()) == set(prompts)
        assert horde.count("POST", r"/generate/async$") == len(horde.jobs)
        assert cluster.delivered() == {p: 1 for s in cluster.servers for p in s.prompts}
        # Every reaction paid once: each author got a gift from each member, each member gave one per author.
        assert cluster.received() == cluster.expected_received()
        gifted = {
            m.id: cluster.accounts[m.id].kudos_details["gifted"] for s in cluster.servers for m in s.members
        }
        assert gifted == {m.id: GIFT * AUTHORS for s in cluster.servers for m in s.members}
        # Horde request ids are capabilities: never in a message others can see.
        public = "\n".join(m.text for m in fake.messages if not m.ephemeral)
        assert not [r.id for r in horde.jobs if r.id in public]
        survivor = cluster.processes["bot-a"]
        assert "Traceback" not in survivor.output, survivor.report()
        assert fake.spec_violations == [], fake.spec_violations
    finally:
        await fake.stop()
