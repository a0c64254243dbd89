"""The Horde client against the fake Horde: error shapes, retry policy, headers, key hygiene."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config import HordeSettings
from bot.horde.client import HordeClient, build_http_client, client_agent
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.models import ApiKey
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def client(horde: FakeHorde, clock: TestClock) -> AsyncIterator[HordeClient]:
    settings = HordeSettings(api_url=horde.base_url, contact="tests@example.invalid", max_retries=3)
    http = build_http_client(settings)
    try:
        yield HordeClient(http, settings, clock)
    finally:
        await http.aclose()


async def test_find_user_parses_user_and_sends_client_agent(client: HordeClient, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=42, worker_count=3)
    found = await client.find_user(ApiKey(user.key))
    assert (found.id, found.username, found.kudos, found.worker_count) == (user.id, f"alice#{user.id}", 42, 3)
    assert horde.calls[-1].client_agent == client_agent("tests@example.invalid")
    assert client_agent("x").startswith("hordebot:")


async def test_horde_exception_shape_has_rc(client: HordeClient, horde: FakeHorde) -> None:
    with pytest.raises(HordeError) as info:
        await client.find_user(ApiKey("wrongkey12345"))
    assert (info.value.status, info.value.rc) == (404, "UserNotFound")


async def test_validation_error_shape_keeps_field_errors(client: HordeClient, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    body = {"prompt": "a cat", "params": {"width": 500}}
    with pytest.raises(HordeError) as info:
        await client.request("POST", "/generate/async", apikey=ApiKey(user.key), json=body)
    assert info.value.status == 400 and info.value.rc is None
    assert "multiple of 64" in " ".join(info.value.errors.values())


async def test_500_on_post_is_not_retried(client: HordeClient, horde: FakeHorde, clock: TestClock) -> None:
    user = horde.add_user("alice")
    horde.inject(r"/generate/async", status=500, times=5)
    with pytest.raises(HordeUnavailable):
        await client.request("POST", "/generate/async", apikey=ApiKey(user.key), json={"prompt": "a cat"})
    assert horde.count("POST", r"/generate/async") == 1
    assert clock.slept == []


async def test_500_on_get_is_retried_with_capped_jittered_backoff(
    client: HordeClient, horde: FakeHorde, clock: TestClock
) -> None:
    horde.inject(r"/users/\d+", status=503, times=2)
    user = horde.add_user("alice")
    found = await client.get_user(user.id)
    assert found.id == user.id
    assert horde.count("GET", r"/users/\d+") == 3
    assert len(clock.slept) == 2
    assert 0.5 <= clock.slept[0] <= 1.0 and 1.0 <= clock.slept[1] <= 2.0


async def test_gives_up_after_max_retries(client: HordeClient, horde: FakeHorde, clock: TestClock) -> None:
    horde.inject(r"/users/\d+", status=502, times=10)
    with pytest.raises(HordeUnavailable):
        await client.get_user(1)
    assert horde.count("GET", r"/users/\d+") == 4
    assert len(clock.slept) == 3


async def test_429_honours_retry_after_even_for_post(
    client: HordeClient, horde: FakeHorde, clock: TestClock
) -> None:
    user = horde.add_user("alice")
    horde.inject(r"/generate/async", status=429, retry_after=3, times=1)
    answer = await client.request(
        "POST", "/generate/async", apikey=ApiKey(user.key), json={"prompt": "a cat"}
    )
    assert "id" in answer
    assert clock.slept == [3.0]


async def test_429_with_long_retry_after_is_raised_not_waited(
    client: HordeClient, horde: FakeHorde, clock: TestClock
) -> None:
    horde.inject(r"/users/\d+", status=429, retry_after=120, times=1)
    with pytest.raises(HordeError) as info:
        await client.get_user(1)
    assert info.value.is_rate_limit and info.value.retry_after == 120
    assert clock.slept == []


async def test_too_many_prompts_429_is_not_retried(client: HordeClient, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    horde.inject(r"/generate/async", status=429, rc="TooManyPrompts", times=3)
    with pytest.raises(HordeError) as info:
        await client.request("POST", "/generate/async", apikey=ApiKey(user.key), json={"prompt": "a cat"})
    assert info.value.rc == "TooManyPrompts" and not info.value.is_rate_limit
    assert horde.count("POST", r"/generate/async") == 1


async def test_malformed_json_is_unavailable(client: HordeClient, horde: FakeHorde) -> None:
    horde.inject(r"/users/\d+", malformed=True, times=10)
    with pytest.raises(HordeUnavailable, match="unreadable"):
        await client.get_user(1)


async def test_connection_refused_is_unavailable(clock: TestClock) -> None:
    settings = HordeSettings(api_url="http://127.0.0.1:9/api", contact="t", max_retries=1)
    async with httpx.AsyncClient() as http:
        client = HordeClient(http, settings, clock)
        with pytest.raises(HordeUnavailable, match="could not be reached"):
            await client.get_user(1)
    assert len(clock.slept) == 1


async def test_api_key_never_in_errors_or_repr(client: HordeClient, horde: FakeHorde) -> None:
    key = ApiKey("supersecretkey123")
    with pytest.raises(HordeError) as info:
        await client.find_user(key)
    for text in (str(info.value), repr(info.value), repr(key), str(key)):
        assert "supersecretkey123" not in text
