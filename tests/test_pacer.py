"""The pacer: every POST that creates Horde work keeps to the Horde's limits, waits its turn in order,
and a 429 from the limiter (Retry-After 0 included) puts it back in line instead of failing it.

The client tests run against the fake Horde counting as the real server does (`horde_limiter`), in real
time: a handful of POSTs, a few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.clock import SystemClock
from bot.config import ConfigError, HordeSettings
from bot.horde.client import HordeClient, build_http_client
from bot.horde.generation import ImageParams, ImageRequest
from bot.horde.models import ApiKey
from bot.horde.pacer import Pacer, PacerSettings, key_id
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock


async def test_two_a_second_in_arrival_order() -> None:
    clock = TestClock(t=100.0)
    pacer = Pacer(clock, PacerSettings(margin=0.1))
    granted: list[tuple[int, float]] = []

    async def send(n: int) -> None:
        await pacer.acquire("image", key_id(f"key{n % 3}"))
        granted.append((n, clock.t))
        pacer.landed("image", key_id(f"key{n % 3}"))  # answered at once

    await asyncio.gather(*(send(n) for n in range(7)))
    assert [n for n, _ in granted] == list(range(7))  # first come, first served
    times = [t for _, t in granted]
    for i in range(2, len(times)):
        assert times[i] - times[i - 2] >= 1.1 - 1e-9  # never a third within a window (+ margin)
    assert pacer.sends == 7 and pacer.waiting("image") == 0


async def test_kinds_have_their_own_lines_and_keys_their_own_limits() -> None:
    clock = TestClock(t=100.0)
    pacer = Pacer(clock, PacerSettings(margin=0.0))
    for _ in range(2):
        await pacer.acquire("image", "a")
        pacer.landed("image", "a")
    start = clock.t
    await pacer.acquire("text", "a")  # another path: its own bucket
    assert clock.t == start
    await pacer.acquire("kudos", "a")
    pacer.landed("kudos", "a")
    await pacer.acquire("kudos", "b")  # transfers are limited per key only
    assert clock.t == start
    assert pacer.next_free("kudos", "a") == pytest.approx(1.0)
    await pacer.acquire("kudos", "a")
    assert clock.t == pytest.approx(start + 1.0)


async def test_a_slot_counts_from_the_hordes_answer_not_from_its_grant() -> None:
    """The Horde counts a POST when it arrives: some time after the grant (a database write, a busy loop),
    at the latest when its answer comes back. Counted from the answer, a third POST can't arrive inside
    the Horde's window of the first two, however late they left."""
    clock = TestClock(t=100.0)
    pacer = Pacer(clock, PacerSettings(margin=0.1))
    await pacer.acquire("image", "a")
    await pacer.acquire("image", "b")
    # Both still on their way: the IP's next slot is at least a window away, and stays so.
    assert pacer.next_free("image", "c") == pytest.approx(1.1)
    clock.t += 0.7
    assert pacer.next_free("image", "c") == pytest.approx(1.1)
    pacer.landed("image", "a")  # the answers come back 0.7 s after the grants
    pacer.landed("image", "b")
    assert pacer.next_free("image", "c") == pytest.approx(1.1)
    await pacer.acquire("image", "c")
    assert clock.t == pytest.approx(101.8)  # not 101.1: the window counts from the answers


async def test_a_slot_never_landed_frees_after_the_flight_timeout() -> None:
    clock = TestClock(t=100.0)
    pacer = Pacer(clock, PacerSettings(image_per_second=1, margin=0.0), flight_timeout=40.0)
    await pacer.acquire("image", "a")  # a caller that never lands it (a bug) can't block the kind
    await pacer.acquire("image", "a")
    assert clock.t == pytest.approx(141.0)  # counted as landed at its timeout, then a window


async def test_cancelled_wait_uses_no_slot() -> None:
    clock = SystemClock()
    pacer = Pacer(clock, PacerSettings(image_per_second=1, margin=0.0))
    await pacer.acquire("image")
    pacer.landed("image")
    waiting = asyncio.create_task(pacer.acquire("image"))
    await asyncio.sleep(0.05)
    assert pacer.waiting("image") == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pacer.waiting("image") == 0 and pacer.sends == 1


def test_hold_after_429_with_retry_after_0_waits_for_reset_at_least_to_next_second() -> None:
    clock = TestClock(t=100.0)
    pacer = Pacer(clock, PacerSettings(margin=0.1))
    # Retry-After 0, reset in 0.6 s: wait until the reset.
    assert pacer.hold_after_429("image", 0, 1000.0, 999.4) == pytest.approx(0.6)
    # No reset header: at least to the next whole second.
    assert pacer.hold_after_429("image", None, None, 999.75) == pytest.approx(0.25)
    # A reset far off (clocks disagree): never more than the window.
    assert pacer.hold_after_429("image", 0, 1100.0, 999.5) == pytest.approx(1.1)
    # A positive Retry-After is honoured as it is.
    assert pacer.hold_after_429("alchemy", 7, None, 999.5) == 7
    assert pacer.holds == 4


def test_settings_are_checked() -> None:
    assert PacerSettings.from_section({"image_per_second": 10}).image_per_second == 10
    with pytest.raises(ConfigError, match=r"horde_pacer\.image_per_second"):
        PacerSettings.from_section({"image_per_second": 0})
    with pytest.raises(ConfigError, match=r"horde_pacer\.margin"):
        PacerSettings.from_section({"margin": -1})


# --- the client against the fake Horde counting as the real one --------------------------------------


@pytest.fixture
async def paced(horde: FakeHorde) -> AsyncIterator[HordeClient]:
    horde.horde_limiter = True
    settings = HordeSettings(api_url=horde.base_url, contact="tests@example.invalid", backoff_base=0.01)
    http = build_http_client(settings)
    try:
        yield HordeClient(http, settings, SystemClock())
    finally:
        await http.aclose()


def _request(prompt: str) -> ImageRequest:
    return ImageRequest(prompt=prompt, params=ImageParams(width=512, height=512, steps=10, n=1))


async def test_a_burst_of_posts_is_paced_and_never_refused(paced: HordeClient, horde: FakeHorde) -> None:
    users = [horde.add_user(f"member{i}", kudos=100) for i in range(3)]
    accepted = await asyncio.gather(
        *(paced.generate_image(_request(f"burst {i}"), ApiKey(users[i % 3].key)) for i in range(6))
    )
    assert len({a.id for a in accepted}) == 6
    statuses = [c.status for c in horde.calls_to(r"/generate/async$", "POST")]
    assert statuses.count(202) == 6
    # Paced to the limit, counted from each answer: however late a POST arrives after its grant, none
    # lands in a window already full.
    assert statuses.count(429) == 0 and len(statuses) == 6
    assert [r.payload["prompt"] for r in horde.jobs] == [f"burst {i}" for i in range(6)]


async def test_a_429_with_retry_after_0_is_waited_out_not_retried_at_once(
    paced: HordeClient, horde: FakeHorde
) -> None:
    user = horde.add_user("alice", kudos=100)
    # Another client on the bot's IP used the window: the Horde answers 429 with Retry-After 0.
    horde.inject(r"/generate/async$", status=429, retry_after=0, times=1)
    started = asyncio.get_running_loop().time()
    accepted = await paced.generate_image(_request("after a 429"), ApiKey(user.key))
    waited = asyncio.get_running_loop().time() - started
    assert accepted.id
    assert [c.status for c in horde.calls_to(r"/generate/async$", "POST")] == [429, 202]
    assert waited >= 0.04  # held back until the reset (the next second at least), not retried at once
    assert paced.pacer.holds == 1


async def test_transfers_are_paced_per_key(paced: HordeClient, horde: FakeHorde) -> None:
    alice, bob, carol = (horde.add_user(n, kudos=100) for n in ("alice", "bob", "carol"))
    await asyncio.gather(
        *(
            paced.transfer_kudos(ApiKey(alice.key), carol.username, 1, idempotency_key=f"k{i}")
            for i in range(3)
        )
    )
    assert [c.status for c in horde.calls_to(r"/kudos/transfer$", "POST")] == [200] * 3
    assert alice.kudos == 97 and bob.kudos == 100
