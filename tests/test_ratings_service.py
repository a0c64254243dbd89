"""The ratings service and client without Discord: timeouts, retries, the Horde's 5/min limit, config, SQL.

Timeouts are wall-clock timers, which the Discord simulator virtualises, so the cases where the ratings
service answers later than the bot waits are driven here, on the same code the buttons call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.app import build_runtime, build_services
from bot.config import ConfigError, HordeSettings
from bot.db.ratings import RatingsRepository
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.ratings import RatingsUnavailable
from bot.services import Services
from bot.services.ratings import load_ratings_settings
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.fakes.ratings import FakeRatings
from tests.support.clock import TestClock

GUILD = 1456074443980800009
ALICE = 1456074443980800013


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def services(
    tmp_path: Path, horde: FakeHorde, ratings: FakeRatings, clock: TestClock
) -> AsyncIterator[Services]:
    settings = make_settings(
        tmp_path,
        horde.base_url,
        ratings_url=ratings.base_url,
        ratings={"timeout": 0.3, "max_retries": 0, "retry_base_seconds": 10.0, "submit_attempts": 5},
    )
    built = build_services(build_runtime(settings, clock=clock))
    await built.start()
    await built.ratings.start()
    try:
        yield built
    finally:
        await built.close()


async def chosen_vote(services: Services, horde: FakeHorde, rating: int = 7) -> int:
    user = horde.add_user("alice")
    await services.accounts.link(ALICE, user.apikey or "")
    served = await services.ratings.serve(guild_id=GUILD, channel_id=1, discord_id=ALICE, dataset=None)
    choice = await services.ratings.choose(served.row.id, ALICE, rating)
    return choice.vote.id


async def run_retries(services: Services, clock: TestClock, seconds: float) -> None:
    for _ in range(int(seconds)):
        clock.t += 1
        await services.ratings.process_due()


async def test_a_late_answer_the_service_took_counts_once_with_the_reward_unknown(
    services: Services, horde: FakeHorde, ratings: FakeRatings, clock: TestClock
) -> None:
    ratings.add_image()
    vote_id = await chosen_vote(services, horde)
    ratings.inject(r"/rating/", method="POST", delay=1.0, times=1)
    outcome = await services.ratings.submit(vote_id, ALICE, 2)
    assert outcome.won and outcome.vote.state == "retrying"
    # The service finishes the slow call after the bot stopped waiting: the rating is in.
    assert await asyncio.to_thread(ratings.wait_for_calls, "POST", r"/rating/", 1)
    assert len(ratings.submissions) == 1
    await run_retries(services, clock, 11)
    vote = await services.ratings.vote(vote_id, ALICE)
    assert vote.state == "submitted" and vote.reward is None
    assert vote.error is not None and "counts once" in vote.error
    assert len(ratings.submissions) == 1


async def test_a_timeout_the_service_never_took_is_retried_and_paid(
    services: Services, horde: FakeHorde, ratings: FakeRatings, clock: TestClock
) -> None:
    ratings.add_image()
    vote_id = await chosen_vote(services, horde)
    ratings.inject(r"/rating/", method="POST", delay=1.0, status=503, times=1)
    outcome = await services.ratings.submit(vote_id, ALICE, 0)
    assert outcome.vote.state == "retrying"
    assert outcome.vote.error == "The ratings service did not answer in time"
    assert services.ratings.retry_eta("vote", vote_id) is not None
    await run_retries(services, clock, 5)
    assert (await services.ratings.vote(vote_id, ALICE)).state == "retrying", "not before its time"
    await asyncio.to_thread(ratings.wait_for_calls, "POST", r"/rating/", 1)
    await run_retries(services, clock, 6)
    vote = await services.ratings.vote(vote_id, ALICE)
    assert vote.state == "submitted" and vote.reward == 5.0 and vote.attempts == 2


async def test_a_second_submission_is_refused_by_the_state_machine(
    services: Services, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    vote_id = await chosen_vote(services, horde)
    outcomes = await asyncio.gather(*(services.ratings.submit(vote_id, ALICE, a % 6) for a in range(10)))
    assert sum(o.won for o in outcomes) == 1
    assert len(ratings.submissions) == 1


async def test_own_generation_retries_stay_within_five_calls_a_minute(
    services: Services, horde: FakeHorde, clock: TestClock
) -> None:
    horde.enforce_rate_limits = False
    user = horde.add_user("alice")
    await services.accounts.link(ALICE, user.apikey or "")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{horde.base_url}/v2/generate/async",
            json={"prompt": "a red fox", "params": {"n": 1}},
            headers={"apikey": user.apikey or "", "Client-Agent": "tests:1:tests"},
        )
    request_id = response.json()["id"]
    [generation_id] = horde.finish(request_id)
    rating_id = await services.ratings.offer_generation_rating(
        guild_id=GUILD, discord_id=ALICE, request_id=request_id, generation_ids=[generation_id], shared=True
    )
    assert rating_id is not None
    await services.ratings.begin_generation_rating(rating_id, ALICE)
    await services.ratings.choose_generation_rating(rating_id, ALICE, 0, 8)
    horde.inject(r"/generate/rate/", status=400, rc="AestheticsServerDown", times=None)
    step = await services.ratings.choose_generation_artifacts(rating_id, ALICE, 0, 1)
    assert step is not None and step.record.state == "retrying"
    attempts_at: list[float] = [clock.t]
    for _ in range(300):
        before = horde.count("POST", r"/generate/rate/")
        clock.t += 1
        await services.ratings.process_due()
        if horde.count("POST", r"/generate/rate/") > before:
            attempts_at.append(clock.t)
    assert len(attempts_at) == 5, "five attempts in all, then it gives up"
    for i, start in enumerate(attempts_at):
        in_a_minute = [t for t in attempts_at[i:] if t < start + 60]
        assert len(in_a_minute) <= 5
    assert min(b - a for a, b in itertools.pairwise(attempts_at)) >= 12
    record = await services.ratings.begin_generation_rating(rating_id, ALICE)
    assert record.record.state == "failed"
    assert record.record.error == "The AI Horde stayed unreachable, so your rating could not be submitted."


async def test_a_generation_too_old_to_rate_is_refused_without_calling_the_horde(
    services: Services, horde: FakeHorde, clock: TestClock
) -> None:
    user = horde.add_user("alice")
    await services.accounts.link(ALICE, user.apikey or "")
    rating_id = await services.ratings.offer_generation_rating(
        guild_id=GUILD,
        discord_id=ALICE,
        request_id="0c8a4d5e-1111-2222-3333-444455556666",
        generation_ids=["0c8a4d5e-1111-2222-3333-444455556667"],
        shared=True,
    )
    assert rating_id is not None
    clock.t += 1201
    with pytest.raises(Exception, match="too old to rate"):
        await services.ratings.begin_generation_rating(rating_id, ALICE)
    assert horde.count("POST", r"/generate/rate/") == 0


async def test_client_reads_datasets_teams_and_error_shapes(services: Services, ratings: FakeRatings) -> None:
    client = services.ratings._client
    dataset = ratings.add_dataset("Sunsets", "golden hour")
    ratings.add_images(3, dataset.id)
    ratings.add_team("Team Alpha")
    [listed] = await client.datasets()
    assert (listed.id, listed.name, listed.description, listed.image_count) == (
        dataset.id,
        "Sunsets",
        "golden hour",
        3,
    )
    [team] = await client.teams()
    assert team.name == "Team Alpha"
    ratings.inject(r"/datasets", status=418, body={"message": "I'm a teapot"})
    with pytest.raises(HordeError) as refused:
        await client.datasets()
    assert (refused.value.status, refused.value.message) == (418, "I'm a teapot")
    assert not isinstance(refused.value, HordeUnavailable)
    ratings.inject(r"/teams", status=502)
    with pytest.raises(RatingsUnavailable):
        await client.teams()
    ratings.inject(r"/teams", body={"teams": "not a list"}, status=200)
    with pytest.raises(RatingsUnavailable, match="does not understand"):
        await client.teams()


async def test_path_values_cannot_escape_their_segment(services: Services, ratings: FakeRatings) -> None:
    from bot.horde.models import ApiKey

    client = services.ratings._client
    with pytest.raises(HordeError):
        await client.new_image(ApiKey("abcdefghijkl"), dataset_id="../../teams?x=1")
    [call] = [c for c in ratings.calls if "rating/new" in c.path]
    assert call.path == "/api/v1/rating/new/..%2F..%2Fteams%3Fx%3D1"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"timeout": 0}, "ratings.timeout"),
        ({"max_retries": 11}, "ratings.max_retries"),
        ({"party_seconds": 5}, "ratings.party_seconds"),
        ({"max_image_bytes": 30 * 1024 * 1024}, "ratings.max_image_bytes"),
        ({"submit_attempts": 0}, "ratings.submit_attempts"),
        ({"retry_check_seconds": "often"}, "ratings.retry_check_seconds"),
    ],
)
def test_bad_ratings_settings_name_the_key(tmp_path: Path, section: dict[str, object], key: str) -> None:
    # The section is checked when the settings are built (start-up), before any service reads it.
    with pytest.raises(ConfigError) as info:
        load_ratings_settings(make_settings(tmp_path, "http://127.0.0.1:9/api", ratings=section))
    assert info.value.key == key


def test_ratings_url_is_a_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9/api")
    settings = dataclasses.replace(
        settings, horde=HordeSettings(api_url="http://h.invalid/api", ratings_url="http://r.invalid/api/v1")
    )
    built = build_services(build_runtime(settings, clock=TestClock()))
    assert built.ratings._client.base_url == "http://r.invalid/api/v1"


async def test_repository_claims_are_exclusive(tmp_path: Path) -> None:
    from bot.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'claims.db'}")
    await db.connect()
    try:
        await assert_exclusive_claims(db)
    finally:
        await db.close()


async def assert_exclusive_claims(db: object) -> None:
    repo = RatingsRepository(db)  # type: ignore[arg-type]
    now = datetime(2026, 5, 1, tzinfo=UTC)
    image = await repo.add_image(
        guild_id=GUILD,
        channel_id=1,
        owner_id=ALICE,
        image_id="img",
        dataset_id=None,
        requested_dataset=None,
        now=now,
    )
    created = await asyncio.gather(
        *(
            repo.create_vote(image_row_id=image.id, guild_id=GUILD, discord_id=ALICE, rating=r, now=now)
            for r in range(1, 11)
        )
    )
    assert sum(v is not None for v in created) == 1
    vote = next(v for v in created if v is not None)
    claims = await asyncio.gather(
        *(repo.claim_vote(vote.id, ["choosing"], now, artifacts=1) for _ in range(10))
    )
    assert claims.count(True) == 1
    moved = await asyncio.gather(*(repo.move_on(image.id) for _ in range(10)))
    assert moved.count(True) == 1


def test_example_config_documents_the_ratings_defaults() -> None:
    from cryptography.fernet import Fernet

    from bot.config import load_settings
    from bot.services.ratings import RatingsSettings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    settings = load_settings(
        example, {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    )
    assert load_ratings_settings(settings) == RatingsSettings()
    assert set(settings.section("ratings")) == {f.name for f in dataclasses.fields(RatingsSettings)}
