"""A member's caps when several bot processes share one PostgreSQL database (issue #17).

A member's servers may sit on shards of different processes, and each process holds its own jobs in
memory: the caps count the member's jobs in flight in every process (`GenerationLimits`, from the
database). SQLite is one process's (a second is refused), so this runs on PostgreSQL only. The second
process runs its services beside the harness's bot, as in tests/test_leases.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import build_runtime, build_services
from bot.config import Settings
from bot.errors import RateLimitedError
from bot.services.generation_options import GenerateOptions
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness
from tests.postgres import PostgresServer
from tests.test_generation_engine import LENIENT_SAFETY, generate, posted_prompts, rows

CAPS = {"cooldown_seconds": 0, "max_per_user": 2, "max_per_guild": 100}


def _process(settings: Settings, process_id: str) -> Settings:
    return dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, process_id=process_id, lease_seconds=60)
    )


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, postgres: PostgresServer) -> Iterator[Settings]:
    url = postgres.new_database()
    built = make_settings(
        tmp_path, horde.base_url, database_url=url, generation_jobs=CAPS, safety=LENIENT_SAFETY
    )
    yield _process(built, "proc-a")
    postgres.drop_database(url)  # after the harness's bot closed it (the harness depends on this fixture)


async def test_a_members_cap_counts_their_generations_in_every_process(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    horde.enforce_rate_limits = False
    alice = h.member("alice")
    other = build_services(build_runtime(_process(h.settings, "proc-b"), clock=h.clock))
    await other.start()
    elsewhere = h.guild.id + 1  # a server on process b's shard
    try:
        # Alice's cap is 2: both of hers go out from process b.
        submitted = [
            await other.generation.submit(
                GenerateOptions(prompt=prompt),
                user_id=alice.id,
                guild_id=elsewhere,
                channel_id=elsewhere,
                channel_nsfw=False,
                is_dm=False,
            )
            for prompt in ("first in b", "second in b")
        ]
        # In a server on process a's shard she is refused as if both were here, and nothing is sent.
        refused = await generate(alice, "third in a")
        assert refused.private and "You already have 2 generations in progress" in refused.text
        assert posted_prompts(horde) == ["first in b", "second in b"]
        # Bob, on the same server, is not held back by her jobs.
        await generate(h.member("bob"), "bob's in a")
        # One of hers ends (cancelled in process b): a has room for one again.
        await other.generation.cancel(submitted[0].job_id, alice.id)
        accepted = await generate(alice, "third in a")
        assert not accepted.private
        # Now one of hers is in each process: process b counts the one process a holds.
        with pytest.raises(RateLimitedError, match="You already have 2 generations in progress"):
            await other.generation.submit(
                GenerateOptions(prompt="fourth in b"),
                user_id=alice.id,
                guild_id=elsewhere,
                channel_id=elsewhere,
                channel_nsfw=False,
                is_dm=False,
            )
        assert posted_prompts(horde) == ["first in b", "second in b", "bob's in a", "third in a"]
        states = {r["payload"]["prompt"]: (r["state"], r["claimed_by"]) for r in await rows(h)}
        assert states["first in b"][0] == "cancelled"
        assert states["second in b"] == ("waiting", "proc-b")
        assert states["third in a"] == ("waiting", "proc-a")
    finally:
        await other.close()
