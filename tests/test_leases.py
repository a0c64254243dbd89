"""Several bot processes on one database (issue #17, part 3): shared work is leased.

Two bots share one database (on SQLite and on PostgreSQL). The simulated Discord runs one bot at a time, so
the process that dies is the harness's bot, "killed" by a restart under another process name (its tasks
die, nothing is released), and the survivor is the bot built after it; a live second process that only
shares the database runs its services beside the harness's bot. What members see and what the fake Horde
was asked are checked: each job polled by its holder only, each result posted once, each gift paid once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_runtime, build_services
from bot.config import DatabaseSettings, Settings
from bot.db.kudos import QUEUED, SENT
from bot.horde.models import ApiKey
from bot.services import Services
from bot.services.generation import GenerationOutcome
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.fakes.ratings import FakeRatings
from tests.harness import Harness, virtual_seconds
from tests.test_generation import as_if_killed_while_delivering, generate, rows
from tests.test_generation_engine import (
    BUSY,
    LENIENT_SAFETY,
    cut_off_while_sending,
    posted_prompts,
    real_limits,
)
from tests.test_kudos import KUDOS, elapse, gifts, idempotency_key, linked_pair, paid, transfers
from tests.test_ratings import RATINGS_SECTION, choose, linked_member, seen, votes
from tests.test_text import LLAMA, job_states, text_worker

pytestmark = pytest.mark.both_engines

# The harness's wall clock is real time (plus what a test shifts): a lease far longer than a test's real
# pauses, so none runs out unless the test lets time pass.
LEASE = 30
# A dead process's lease runs out, then the survivor's keeper (every third of a lease) sees it.
TAKEOVER = LEASE + LEASE // 3 + 2


def _database(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, **changes))


@pytest.fixture
def lease_seconds(request: pytest.FixtureRequest) -> int:
    return int(getattr(request, "param", LEASE))


@pytest.fixture
def settings(
    tmp_path: Path, horde: FakeHorde, ratings: FakeRatings, db_url: str, lease_seconds: int
) -> Settings:
    built = make_settings(
        tmp_path,
        horde.base_url,
        ratings_url=ratings.base_url,
        ratings=RATINGS_SECTION,
        database_url=db_url,
        kudos=KUDOS,
        generation_jobs=BUSY,
        safety=LENIENT_SAFETY,
    )
    return _database(built, process_id="proc-a", lease_seconds=lease_seconds)


@pytest.fixture(autouse=True)
async def _world(harness: Harness, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False  # the fake's limiter counts real seconds, the tests virtual ones
    horde.clock = lambda: virtual_seconds(harness)
    await harness.services.guild_config.update(harness.guild.id, kudos_emojis={"👍": 5})


def checks_of(horde: FakeHorde, request_id: str) -> int:
    return horde.count("GET", rf"/generate/check/{request_id}$")


async def kill_and_start_other(h: Harness) -> None:
    """Process a dies (kill -9: its leases stay until they run out); process b starts on the database."""
    h.settings = _database(h.settings, process_id="proc-b")
    await h.restart()


async def test_a_dead_processs_generations_are_taken_over_after_its_lease_and_delivered_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    await generate(h.member("alice"), prompt="a first lighthouse")
    first = horde.last_request("image")
    await generate(h.member("bob"), prompt="a second lighthouse")
    second = horde.last_request("image")
    assert first.id != second.id
    horde.start_processing(first.id)
    await h.advance(2.5)
    assert checks_of(horde, first.id) >= 1
    await kill_and_start_other(h)
    horde.finish(first.id)
    horde.finish(second.id)
    # Process a's leases still run: b leaves its jobs alone (no check, nothing posted).
    before = checks_of(horde, first.id), checks_of(horde, second.id)
    await h.advance(2.5)  # b's first passes (its resume, its keeper, its queue) are done
    assert (checks_of(horde, first.id), checks_of(horde, second.id)) == before
    assert not [m for m in h.channel_messages() if m.attachments]
    # Past the lease, b's keeper finds them unheld and resumes them as a restart would.
    await elapse(h, TAKEOVER)
    await h.advance(31)
    posted = [m for m in h.channel_messages() if m.attachments]
    assert len(posted) == 2, "each generation is posted once, by the survivor"
    shown = "\n".join(e.description or "" for m in posted for e in m.embeds)
    assert "a first lighthouse" in shown and "a second lighthouse" in shown
    jobs = await rows(h)
    assert [j["state"] for j in jobs] == ["done", "done"]
    assert [j["claimed_by"] for j in jobs] == [None, None]  # released when they ended
    assert {j["result_message_id"] for j in jobs} == {m.id for m in posted}
    assert first.id not in h.sent_text() and second.id not in h.sent_text()


async def test_a_dead_processs_line_is_sent_once_in_order_by_the_other(
    harness: Harness, horde: FakeHorde
) -> None:
    """Jobs waiting to be sent (the Horde's limits allow two POSTs at once) when process a dies: b sends
    them once its lease has run out, each once and in order, and posts every result once."""
    h = harness
    real_limits(horde, h)
    for i in range(5):
        await generate(h.member(f"member{i}"), prompt=f"picture {i}")
    assert posted_prompts(horde) == ["picture 0", "picture 1"]
    await kill_and_start_other(h)
    await h.advance(2.5)  # b's first passes (its resume, its keeper) are done
    assert posted_prompts(horde) == ["picture 0", "picture 1"], "a's line is a's while its lease runs"
    await elapse(h, TAKEOVER)
    assert posted_prompts(horde) == [f"picture {i}" for i in range(5)]  # each once, in order
    for request in horde.jobs:
        horde.finish(request.id)
    await h.advance(31)
    assert len([m for m in h.channel_messages() if m.attachments]) == 5
    assert [j["state"] for j in await rows(h)] == ["done"] * 5


async def test_a_dead_processs_post_cut_off_while_sending_is_sent_again_once_by_the_other(
    harness: Harness, horde: FakeHorde
) -> None:
    """Process a is killed while a POST is on its way (the Horde got it, a never stored its answer): b
    sends that job again once a's lease has run out, first in line, and every member gets one result."""
    h = harness
    real_limits(horde, h)
    for i in range(3):
        await generate(h.member(f"member{i}"), prompt=f"picture {i}")
    assert posted_prompts(horde) == ["picture 0", "picture 1"]
    await cut_off_while_sending(h, horde, job_id=3)
    await kill_and_start_other(h)
    await h.advance(2.5)
    assert posted_prompts(horde) == ["picture 0", "picture 1", "picture 2"], "a's job while its lease runs"
    await elapse(h, TAKEOVER)
    assert posted_prompts(horde) == ["picture 0", "picture 1", "picture 2", "picture 2"]
    for request in horde.jobs:
        horde.finish(request.id)
    await h.advance(31)
    delivered = [m for m in h.channel_messages() if m.attachments]
    assert len(delivered) == 3
    assert sum("picture 2" in (e.description or "") for m in delivered for e in m.embeds) == 1
    jobs = await rows(h)
    assert [j["state"] for j in jobs] == ["done"] * 3
    assert [j["interrupted_sends"] for j in jobs] == [0, 0, 1]
    assert not any("restarted while sending" in m.content for m in h.channel_messages())


async def test_a_process_killed_while_posting_a_result_is_not_posted_twice_by_the_other(
    harness: Harness, horde: FakeHorde
) -> None:
    """Process a showed the result in its reply, then died before storing the end (the job `delivering`):
    b, once a's lease has run out, fetches the result again and finds it shown, so nothing is posted twice
    (and a result a never posted would be posted: tests/test_generation.py)."""
    h = harness
    reply = await generate(h.member("alice"), prompt="a lighthouse shown once")
    request = horde.last_request("image")
    horde.finish(request.id)
    await h.advance(31)
    shown = reply.latest()
    assert shown.attachments and shown.message is not None
    [job] = await rows(h)
    await as_if_killed_while_delivering(h, job["id"], holder="proc-a", lease=LEASE)
    await kill_and_start_other(h)
    await h.advance(2.5)
    statuses = rf"/generate/status/{request.id}$"
    assert horde.count("GET", statuses) == 1, "a's job while its lease runs"
    await elapse(h, TAKEOVER)
    assert horde.count("GET", statuses) == 2
    assert [m.id for m in h.channel_messages() if m.attachments] == [shown.message.id]
    [job] = await rows(h)
    assert job["state"] == "done" and job["result_message_id"] == shown.message.id
    assert job["claimed_by"] is None


async def test_a_dead_processs_text_job_is_taken_over_and_answered_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    text_worker(horde)
    await h.member("alice").slash("text", prompt="hello", model=LLAMA)
    request = horde.last_request("text")
    await kill_and_start_other(h)
    horde.finish_text(request.id, texts=["an answer from the survivor"])
    await h.advance(2.5)
    polled = horde.count("GET", rf"/generate/text/status/{request.id}$")
    await h.advance(6)
    assert horde.count("GET", rf"/generate/text/status/{request.id}$") == polled, "a's job, a's lease"
    await elapse(h, TAKEOVER)
    posted = [m.content for m in h.channel_messages() if "an answer from the survivor" in m.content]
    assert len(posted) == 1
    assert await job_states(h) == ["done"]


async def test_a_dead_processs_queued_gifts_are_taken_over_and_paid_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    horde.set_down(True)  # the transfers can't go: the gifts wait in process a's queue
    for i in range(3):
        await alice.react(await bob.send(f"tip {i}"), "👍")
    await elapse(h, 2)
    assert {g.state for g in await gifts(h)} == {QUEUED}
    await kill_and_start_other(h)
    horde.set_down(False)
    await h.advance(2.5)  # b's first passes (its resume, its keeper, its queue) are done
    assert paid(horde) == [], "a live lease: nobody else sends process a's gifts"
    await elapse(h, TAKEOVER + 30)
    assert {g.state for g in await gifts(h)} == {SENT}
    assert len(paid(horde)) == 3 and horde.user(b.id).kudos == 115 and horde.user(a.id).kudos == 85


async def kill(services: Services) -> None:
    """A live process beside the harness's bot dies (kill -9): its tasks stop, nothing is handed back (its
    leases stay until they run out)."""
    services.leases.stop()
    await services.scheduler.close()
    await services._runtime.close()  # what the process held, closed as its death closes it
    services.images.close()


REFUSED_IN_LINE = "SomethingNew: the Horde refused this one"


async def test_a_refusal_of_a_job_sent_from_the_line_is_told_once_after_its_process_was_killed(
    harness: Harness, horde: FakeHorde
) -> None:
    """A job waiting in line is sent later by the job engine and refused by the Horde, and the process is
    killed while telling its member (its Discord never answered). The end was stored as one being told
    (`delivering` with its ending), so the process taking the job over tells it: once, in the member's
    reply, and the refused request is not sent again."""
    h = harness
    alice = h.member("alice")
    # The Horde's limiter turns the POST away once: the job waits in process a's line.
    horde.inject(r"/generate/async$", method="POST", status=429, retry_after=5, times=1)
    reply = await generate(alice, prompt="a refused lighthouse")
    assert "Waiting to be sent to the AI Horde (position 1)" in reply.latest().text
    await kill_and_start_other(h)  # the harness's bot is process b now; a's line is a's
    # Process a again (its own id: it resumes its line at once), without a Discord that answers.
    again = build_services(build_runtime(_database(h.settings, process_id="proc-a"), clock=h.clock))
    await again.start()
    telling = asyncio.Event()

    async def never_answers(outcome: GenerationOutcome) -> int | None:
        telling.set()
        await asyncio.Event().wait()  # until the kill
        return None

    again.generation.deliver.plug(never_answers)
    body = {"message": "the Horde refused this one", "rc": "SomethingNew"}
    horde.inject(r"/generate/async$", method="POST", status=400, rc="SomethingNew", body=body, times=1)
    try:
        assert await again.generation.resume() == 1
        await again.scheduler.tick()  # its line is sent (it has no bot of its own to tick its scheduler)
        await asyncio.wait_for(telling.wait(), timeout=30)  # sent from the line, refused, being told
    finally:
        await kill(again)
    assert REFUSED_IN_LINE not in reply.latest().text
    await elapse(h, TAKEOVER)
    assert REFUSED_IN_LINE in reply.latest().text, "told in the member's reply by process b"
    await elapse(h, TAKEOVER)
    # The reply is public: a message of the channel, and the only one that says it.
    shown = [m.content for m in h.channel_messages()]
    assert sum(REFUSED_IN_LINE in text for text in shown) == 1, shown
    assert alice.actor.user.dm_channel is None or not list(alice.actor.user.dm_channel.history())
    [job] = await rows(h)
    assert job["state"] == "failed" and job["ending"] is None and job["claimed_by"] is None
    assert horde.count("POST", r"/generate/async$") == 2, "the refused request is not sent again"


async def test_a_gift_sent_by_both_processes_is_paid_once(harness: Harness, horde: FakeHorde) -> None:
    """Process a holds a queued gift and stalls past its lease just before its transfer; b takes the gift
    over and sends it; then a's transfer goes out too. Both carry the gift's Idempotency-Key, which the
    Horde applies once (API_NOTES §1; the fake does the same: tests/fakes/test_fake_horde.py): the ledger
    moves once, and a is answered as b was."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    horde.set_down(True)  # the transfer can't go yet: the gift waits in process a's queue
    await alice.react(await bob.send("a tip"), "👍")
    await elapse(h, 2)
    [gift] = await gifts(h)
    assert gift.state == QUEUED
    stalled = build_runtime(h.settings, clock=h.clock)  # process a's own Horde client, stalled
    await kill_and_start_other(h)
    horde.set_down(False)
    await elapse(h, TAKEOVER)
    [gift] = await gifts(h)
    assert gift.state == SENT, "b took the gift over and sent it"
    try:
        late = await stalled.horde.transfer_kudos(
            ApiKey(a.apikey or ""), b.username, gift.amount, idempotency_key=gift.idempotency_key
        )
    finally:
        await stalled.close()
    assert late.transferred == gift.amount, "answered as the first transfer was"
    calls = [c for c in transfers(horde) if idempotency_key(c) == gift.idempotency_key]
    # (The 503s are a's tries while the Horde was down.)
    assert [c.status for c in calls if c.status != 503] == [200, 200], "sent by b, then by a"
    assert horde.user(b.id).kudos == 105 and horde.user(a.id).kudos == 95, "paid once"
    assert horde.user(b.id).kudos_details["received"] == 5


async def test_a_dead_processs_rating_retry_is_submitted_once_by_the_other(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    h = harness
    ratings.add_image()
    alice, _ = await linked_member(h, horde, "alice")
    step2 = await choose(alice, 5)
    ratings.set_down(True)
    reply = await alice.click(step2.message, label="2 · some flaws")
    assert "not delivered yet" in seen(reply)  # process a retries it in the background
    ratings.set_down(False)
    await kill_and_start_other(h)
    await h.advance(2.5)
    assert ratings.submissions == [], "a's retry is a's while its lease runs"
    await elapse(h, TAKEOVER)
    [vote] = await votes(h)
    assert vote["state"] == "submitted" and vote["claimed_by"] is None
    assert len(ratings.submissions) == 1


@pytest.mark.parametrize("lease_seconds", [60], indirect=True)
async def test_a_live_processs_job_is_never_polled_by_the_other(
    harness: Harness, horde: FakeHorde, tmp_path: Path
) -> None:
    """Process b shares the database while process a runs: b's resume and its keeper find nothing to take,
    it never checks a's request, and a delivers the result once."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice)
    request = horde.last_request("image")
    await h.advance(2.5)
    other = build_services(build_runtime(_database(h.settings, process_id="proc-b"), clock=h.clock))
    await other.start()
    try:
        polled = checks_of(horde, request.id)
        assert await other.generation.resume() == 0
        await other.leases.keep()
        for _ in range(5):
            await other.scheduler.tick()
        await h.settle()
        assert other.generation.poller.tracked == []
        assert checks_of(horde, request.id) == polled, "process b never checks process a's job"
        horde.finish(request.id)
        await h.advance(31)
        assert len(reply.latest().attachments) == 1
        assert [j["state"] for j in await rows(h)] == ["done"]
        assert other.generation.poller.tracked == []
    finally:
        await other.close()


async def test_alone_on_sqlite_leases_are_kept_only_while_a_dead_processs_work_is_in_the_database(
    harness: Harness, horde: FakeHorde, engine: str
) -> None:
    """SQLite refuses a second process (its file is locked to this one): a process alone on it keeps no
    leases (no renewals, no takeover checks) unless a dead predecessor's work is in the database, and
    stops once that is taken over. On a shared database (PostgreSQL) the keeper always runs."""
    h = harness
    shared = engine == "postgresql"
    assert h.services.leases.running == shared
    await generate(h.member("alice"), prompt="a lighthouse kept")
    with h.statements() as statements:
        await elapse(h, LEASE)  # three keeper passes, if it runs
    renewals = [s for s in statements if re.search(r"SET lease_until\s*=", s)]
    assert bool(renewals) == shared, renewals
    await kill_and_start_other(h)
    assert h.services.leases.running, "process a's job is in the database: b keeps watch"
    await elapse(h, TAKEOVER + LEASE // 3)
    [job] = await rows(h)
    assert job["claimed_by"] == "proc-b" and job["state"] == "waiting", "taken over"
    assert h.services.leases.running == shared, "alone, with nobody else's work left: the keeper stops"
    horde.finish(horde.last_request("image").id)
    await h.advance(31)
    assert len([m for m in h.channel_messages() if m.attachments]) == 1


def test_lease_settings_have_bounds() -> None:
    assert DatabaseSettings().lease_seconds == 30 and DatabaseSettings().process_id is None
    with pytest.raises(ValueError):
        DatabaseSettings(lease_seconds=2)
    # A takeover (within 1 1/3 leases) must come well inside the few minutes Discord keeps a nonce.
    assert DatabaseSettings(lease_seconds=60).lease_seconds == 60
    with pytest.raises(ValueError):
        DatabaseSettings(lease_seconds=61)
