"""A member's caps and cooldown when several bot processes share one PostgreSQL database (issue #17).

A member's servers may sit on shards of different processes, and each process holds its own jobs in
memory: the caps count the member's jobs in flight in every process (`GenerationLimits`, from the
database), the cooldown runs from their newest job in any process, and a job is stored only within both,
checked again under a lock per member and per server as it is inserted (`GenerationJobRepository.create`),
so commands reaching two processes in the same instant can't both pass. SQLite is one process's (a second
is refused), so this runs on PostgreSQL only. The second process runs its services beside the harness's
bot, as in tests/test_leases.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import build_runtime, build_services
from bot.clock import SystemClock
from bot.config import Settings
from bot.errors import RateLimitedError
from bot.horde.errors import HordeError
from bot.services import Services
from bot.services.generation import Submitted
from bot.services.generation_options import GenerateOptions
from bot.services.safety import PromptRefusedError
from bot.ui.errors import render_error
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Reply
from tests.postgres import PostgresServer
from tests.test_alchemy import png
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


# --- at the same instant: the insert checks again, under a lock per member and per server --------------

CAP_TEXT = "You already have 2 generations in progress (the limit is 2). Wait for one to finish."
SERVER_TEXT = "This server has too many generations in progress right now. Try again in a minute."


@pytest.fixture
async def other(harness: Harness, horde: FakeHorde) -> AsyncIterator[Services]:
    """Process b on the same database and clock, with process a's settings."""
    horde.enforce_rate_limits = False
    services = build_services(build_runtime(_process(harness.settings, "proc-b"), clock=harness.clock))
    await services.start()
    try:
        yield services
    finally:
        await services.close()


def submit(services: Services, user_id: int, guild_id: int, prompt: str) -> Any:
    return services.generation.submit(
        GenerateOptions(prompt=prompt),
        user_id=user_id,
        guild_id=guild_id,
        channel_id=guild_id,
        channel_nsfw=False,
        is_dm=False,
    )


def seen(outcome: object) -> str:
    """What the member was shown: the refusal's text from the one error renderer (ephemeral), or a
    public reply's."""
    if isinstance(outcome, Reply):
        return outcome.text if outcome.private else "accepted"
    if isinstance(outcome, Submitted):
        return "accepted"
    assert isinstance(outcome, BaseException), outcome
    return render_error(outcome) or repr(outcome)


def set_limits(services: list[Services], **limits: Any) -> None:
    """/generate's caps, the same in every process."""
    replace_settings([each.generation for each in services], **limits)


def replace_settings(parts: list[Any], **values: Any) -> None:
    """These services' (one per process) settings with `values` replaced."""
    for part in parts:
        part.settings = dataclasses.replace(part.settings, **values)


def seconds_said(pattern: str, text: str) -> int:
    """The seconds a refusal tells the member to wait (`pattern`'s one group)."""
    found = re.search(pattern, text)
    assert found, text
    return int(found.group(1))


async def test_a_members_commands_at_the_same_instant_in_two_processes_stay_within_the_cap(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # Six /generate of hers at once, at a cap of 2: three on a server of process a's shard (one through
    # Discord: the simulator runs one interaction at a time), three on a server of process b's. Each
    # process alone would let two through.
    h = harness
    alice = h.member("alice")
    elsewhere = h.guild.id + 1
    outcomes = await asyncio.gather(
        generate(alice, "a0"),
        *(submit(h.services, alice.id, h.guild.id, f"a{i}") for i in (1, 2)),
        *(submit(other, alice.id, elsewhere, f"b{i}") for i in range(3)),
        return_exceptions=True,
    )
    shown = [seen(o) for o in outcomes]
    assert shown.count("accepted") == 2, shown
    assert shown.count(CAP_TEXT) == 4, "the rest are told the cap (privately: `seen`)"
    assert len(posted_prompts(horde)) == 2, "nothing is sent for a refused one"
    assert len([r for r in await rows(h) if r["user_id"] == alice.id]) == 2, "nor stored"


async def test_a_servers_commands_at_the_same_instant_in_two_processes_stay_within_its_cap(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # A server's commands all reach one process but for a moment (a takeover, shards being moved): four
    # members of one server at once, two through each process, at the server's cap of 2.
    h = harness
    set_limits([h.services, other], max_per_guild=2)
    members = [h.member(name) for name in ("alice", "bob", "carol", "dave")]
    outcomes = await asyncio.gather(
        generate(members[0], "a alice"),
        submit(h.services, members[1].id, h.guild.id, "a bob"),
        *(submit(other, m.id, h.guild.id, f"b {m.id}") for m in members[2:]),
        return_exceptions=True,
    )
    shown = [seen(o) for o in outcomes]
    assert (shown.count("accepted"), shown.count(SERVER_TEXT)) == (2, 2), shown
    assert len(posted_prompts(horde)) == 2
    assert len(await rows(h)) == 2


async def wait(h: Harness, seconds: float) -> None:
    """Time passes: the simulator's (monotonic: scheduler, this process's memory) and the wall clock's,
    which the database's times are (the harness's wall clock follows real time only)."""
    await h.advance(seconds)
    h.clock.shift(seconds)


WAIT = r"Please wait (\d+) seconds? before your next generation\."


def waited(text: str) -> int:
    return seconds_said(WAIT, text)


async def test_a_cooldown_started_in_one_process_holds_in_the_other(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    h = harness
    set_limits([h.services, other], cooldown_seconds=10)
    alice = h.member("alice")
    elsewhere = h.guild.id + 1
    assert seen(await generate(alice, "first in a")) == "accepted"
    await wait(h, 4)
    # Process b never saw her generate: the database tells it when she last did (the moments the test
    # itself takes in real time may round it down a second).
    with pytest.raises(RateLimitedError) as refused:
        await submit(other, alice.id, elsewhere, "second in b")
    assert waited(seen(refused.value)) in (5, 6)
    await wait(h, 7)
    await submit(other, alice.id, elsewhere, "second in b")
    # And back: process a now tells her to wait, privately, for the one she sent through b.
    again = await generate(alice, "third in a")
    assert again.private and waited(again.text) in (9, 10)
    assert posted_prompts(horde) == ["first in a", "second in b"]


async def test_commands_at_the_same_instant_in_two_processes_respect_the_cooldown(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    h = harness
    set_limits([h.services, other], cooldown_seconds=10)
    alice = h.member("alice")
    outcomes = await asyncio.gather(
        generate(alice, "in a"), submit(other, alice.id, h.guild.id + 1, "in b"), return_exceptions=True
    )
    shown = [seen(o) for o in outcomes]
    assert shown.count("accepted") == 1, shown
    assert [waited(s) for s in shown if s != "accepted"] == [10], "the other is told to wait"
    assert len(posted_prompts(horde)) == 1


async def sources(h: Harness) -> int:
    async with h.runtime.db.session() as session:
        return int((await session.execute(text("SELECT count(*) FROM image_sources"))).scalar_one())


async def test_an_img2img_request_the_cap_refuses_as_it_is_stored_leaves_no_source_behind(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # Her img2img /generate reaches process a and passes the caps while her sketch downloads; meanwhile
    # two of hers are stored by process b (one from a sketch of its own). Stored at last, a's is refused
    # by the caps checked again as it is inserted: its sketch is not kept (only Regenerate would need it).
    h = harness
    alice = h.member("alice")
    downloading, downloaded = asyncio.Event(), asyncio.Event()

    async def sketch() -> bytes:  # her attachment, still downloading
        downloading.set()
        await downloaded.wait()
        return png(colour=(30, 200, 30))

    in_a = asyncio.ensure_future(
        h.services.generation.submit(
            GenerateOptions(prompt="from my sketch in a"),
            user_id=alice.id,
            guild_id=h.guild.id,
            channel_id=h.channel.id,
            channel_nsfw=False,
            is_dm=False,
            source_image=sketch,
        )
    )
    await asyncio.wait_for(downloading.wait(), timeout=30)
    await other.generation.submit(
        GenerateOptions(prompt="from a sketch in b"),
        user_id=alice.id,
        guild_id=h.guild.id + 1,
        channel_id=h.guild.id + 1,
        channel_nsfw=False,
        is_dm=False,
        source_image=png(),
    )
    await submit(other, alice.id, h.guild.id + 1, "b")
    assert await sources(h) == 1
    downloaded.set()
    with pytest.raises(RateLimitedError) as refused:
        await in_a
    assert seen(refused.value) == CAP_TEXT
    assert await sources(h) == 1, "b's sketch is kept for Regenerate; a's refused one is not"
    assert posted_prompts(horde) == ["from a sketch in b", "b"]


# --- the safety gate: pauses stored by another process -----------------------------------------------


async def test_a_member_paused_for_refused_prompts_in_one_process_is_paused_in_the_other(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    h = harness
    alice = h.member("alice")
    # Her second refused prompt in a row, in process b, pauses her for 5 minutes.
    for prompt in ("loli, nude", "l0l1 nude"):
        with pytest.raises(PromptRefusedError):
            await other.safety.check_prompt(guild_id=h.guild.id + 1, user_id=alice.id, prompt=prompt)
    # Process a had read the database before: it learns it at her next command, and says so privately.
    paused = await generate(alice, "a lighthouse")
    assert paused.private and "Your requests are paused after refused prompts. Try again in 5 minutes" in (
        paused.text
    )
    assert seen(await generate(h.member("bob"), "bob's lighthouse")) == "accepted", "only her"
    assert posted_prompts(horde) == ["bob's lighthouse"]


async def test_the_horde_timing_out_the_ip_in_one_process_pauses_the_other(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # The Horde times out the IP every process shares: process b hears it (an alchemy request), process a
    # sends nothing either until the pause ends.
    h = harness
    await other.safety.note_ip_timeout(retry_after=120)
    paused = await generate(h.member("alice"), "a lighthouse")
    assert paused.private and "The AI Horde has paused requests from this bot" in paused.text
    assert "Try again in 2 minutes" in paused.text
    assert posted_prompts(horde) == []


async def test_a_job_waiting_in_line_is_not_sent_into_an_ip_pause_another_process_heard(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # A job of process a waits in its line when the Horde times out the IP every process shares, answering
    # a request of process b: a does not send it into the pause, and its member is told, as a new command
    # would be.
    h = harness
    horde.inject(r"/generate/async$", method="POST", status=429, retry_after=5, times=1)
    waiting = await generate(h.member("alice"), "in a's line")
    assert "Waiting to be sent to the AI Horde (position 1)" in waiting.latest().text
    horde.inject(r"/generate/async$", method="POST", status=403, rc="TimeoutIP", retry_after=120, times=1)
    with pytest.raises(HordeError):
        await submit(other, h.member("bob").id, h.guild.id + 1, "b's, timed out")
    await wait(h, 6)
    assert posted_prompts(horde) == [], "a's job is not sent into the pause"
    told = waiting.latest().text.replace("**", "")
    assert "The AI Horde has paused requests from this bot after a rejected prompt." in told
    assert "Try again in 2 minutes" in told
    states = {r["payload"]["prompt"]: r["state"] for r in await rows(h)}
    assert states == {"in a's line": "failed", "b's, timed out": "failed"}


# --- the per-minute request limit: a member's requests through every process count together -----------

TOO_FAST = r"You're sending requests too fast\. Try again in (\d+) seconds?\."


def set_pace(services: list[Services], **limits: Any) -> None:
    """The request limit, the same in every process."""
    replace_settings([each.safety for each in services], **limits)


def retry_in(text: str) -> int:
    return seconds_said(TOO_FAST, text)


async def test_a_members_request_limit_counts_their_commands_in_every_process(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # Two requests at once, then one a minute: she spends both in a server on process b's shard. (The
    # harness's wall clock, which the stored count uses, also runs with the real seconds the test takes.)
    h = harness
    set_pace([h.services, other], user_burst=2, user_per_minute=1)
    alice = h.member("alice")
    elsewhere = h.guild.id + 1
    for _ in range(2):
        await other.safety.gate(user_id=alice.id, guild_id=elsewhere)  # process b's command tree runs it
    # In a server on process a's shard she is refused as if both had come here, told when to retry.
    refused = await generate(alice, "a lighthouse")
    assert refused.private and 30 <= retry_in(refused.text) <= 59
    assert seen(await generate(h.member("bob"), "bob's lighthouse")) == "accepted", "only her"
    await wait(h, 60)
    assert seen(await generate(alice, "a lighthouse")) == "accepted", "one more after a minute"
    # And back: the one she used in process a is missing in process b.
    with pytest.raises(RateLimitedError) as again:
        await other.safety.gate(user_id=alice.id, guild_id=elsewhere)
    assert 30 <= retry_in(seen(again.value)) <= 59
    assert posted_prompts(horde) == ["bob's lighthouse", "a lighthouse"]


async def test_a_members_requests_at_the_same_instant_in_two_processes_stay_within_the_limit(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    h = harness
    set_pace([h.services, other], user_burst=3, user_per_minute=2)
    alice = h.member("alice")
    outcomes = await asyncio.gather(
        *(
            each.safety.gate(user_id=alice.id, guild_id=h.guild.id + i)
            for i in range(4)
            for each in (h.services, other)
        ),
        return_exceptions=True,
    )
    passed = [o for o in outcomes if o is None]
    refused = [seen(o) for o in outcomes if o is not None]
    assert len(passed) == 3, outcomes
    assert len(refused) == 5 and all(25 <= retry_in(text) <= 31 for text in refused), refused


SERVER_TOO_FAST = (
    r"This server is sending too many AI Horde requests right now\. Try again in (\d+) seconds?\."
)


def server_retry_in(text: str) -> int:
    found = re.search(SERVER_TOO_FAST, text)
    assert found, text
    return int(found.group(1))


async def test_a_servers_request_limit_counts_its_commands_in_every_process(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # A server's commands reach the process holding its shard, but for a moment while the shard moves to
    # another: the commands that reached each count against the server's one limit. Two at once, then one a
    # minute: process b spent both (it held the shard a moment ago).
    h = harness
    set_pace([h.services, other], guild_burst=2, guild_per_minute=1)
    for name in ("bob", "carol"):
        await other.safety.gate(user_id=h.member(name).id, guild_id=h.guild.id)
    refused = await generate(h.member("alice"), "a lighthouse")
    assert refused.private and 30 <= server_retry_in(refused.text) <= 59
    await wait(h, 60)
    assert seen(await generate(h.member("alice"), "a lighthouse")) == "accepted", "one more after a minute"
    # And back: the one process a counted is missing in process b.
    with pytest.raises(RateLimitedError) as again:
        await other.safety.gate(user_id=h.member("dave").id, guild_id=h.guild.id)
    assert 30 <= server_retry_in(seen(again.value)) <= 59
    # Another server's limit is its own.
    await other.safety.gate(user_id=h.member("dave").id, guild_id=h.guild.id + 1)
    assert posted_prompts(horde) == ["a lighthouse"]


async def test_a_servers_requests_at_the_same_instant_in_two_processes_stay_within_its_limit(
    harness: Harness, horde: FakeHorde, other: Services
) -> None:
    # Eight members of one server at once, four through each process, at the server's burst of 3; and one
    # member refused by her own limit spends none of the server's.
    h = harness
    set_pace([h.services, other], guild_burst=3, guild_per_minute=2, user_burst=1, user_per_minute=1)
    alice = h.member("alice")
    await other.safety.gate(user_id=alice.id, guild_id=h.guild.id + 1)  # her one, in another server
    members = [h.member(f"member{i}") for i in range(8)]
    outcomes = await asyncio.gather(
        *(
            (h.services if i % 2 else other).safety.gate(user_id=m.id, guild_id=h.guild.id)
            for i, m in enumerate([alice, *members])
        ),
        return_exceptions=True,
    )
    shown = [seen(o) if o is not None else "passed" for o in outcomes]
    assert retry_in(shown[0]) > 0, "alice: her own limit"
    assert shown.count("passed") == 3, shown
    assert all(25 <= server_retry_in(t) <= 31 for t in shown[1:] if t != "passed"), shown


# --- leases are judged by each host's clock: a host out of step with the database's is warned about -------


class HostClock(SystemClock):
    """A host's own clock (`host_time`), set `offset` seconds away from the real time: the database
    server's clock is the real time (the test's PostgreSQL runs on this machine)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.offset)


def clock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.services.leases" and r.levelno == logging.WARNING
    ]


async def test_a_host_whose_clock_is_out_of_step_with_the_databases_is_warned_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Process b's host runs 5 minutes ahead. Its lease is 60 s: more than 20 s off is out of step.
    clock = HostClock(offset=300)
    other = build_services(build_runtime(_process(harness.settings, "proc-b"), clock=clock))
    await other.start()
    caplog.set_level(logging.INFO, logger="bot.services.leases")
    try:
        for _ in range(3):  # three renewals: one warning
            await other.leases.keep()
        (warning,) = clock_warnings(caplog)
        assert "this host's clock is ahead of the database server's by 300 s" in warning
        assert "leases may be taken over early or late" in warning and "(NTP)" in warning
        clock.offset = 5  # synced, within a third of the lease: no warning, a note that it recovered
        await other.leases.keep()
        assert len(clock_warnings(caplog)) == 1
        assert any("back in step" in r.getMessage() for r in caplog.records)
        clock.offset = -120  # out of step again, the other way: warned again, once
        for _ in range(2):
            await other.leases.keep()
        assert len(clock_warnings(caplog)) == 2
        assert "behind the database server's by 120 s" in clock_warnings(caplog)[1]
    finally:
        await other.close()


async def test_a_host_whose_clock_is_in_step_is_not_warned(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    other = build_services(build_runtime(_process(harness.settings, "proc-b"), clock=HostClock()))
    await other.start()
    caplog.set_level(logging.INFO, logger="bot.services.leases")
    try:
        for _ in range(3):
            await other.leases.keep()
        # The harness's own process runs on the test's clock, not the host's: it compares nothing.
        await harness.services.leases.keep()
        assert clock_warnings(caplog) == []
    finally:
        await other.close()
