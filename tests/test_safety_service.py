"""SafetyService without Discord: settings, NSFW policy, cooldowns, rate-limit buckets, incidents."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import build_runtime, build_services
from bot.config import ConfigError
from bot.errors import RateLimitedError, UserFacingError
from bot.services import Services
from bot.services.safety import (
    REFUSED,
    ImageRefusedError,
    PromptRefusedError,
    SafetySettings,
    code_block,
    wait_text,
)
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock

GUILD = 1456074443980800009
ALICE = 1456074443980800013
BOB = 1456074443980800014


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


async def build(tmp_path: Path, horde: FakeHorde, clock: TestClock, **safety: Any) -> Services:
    settings = make_settings(tmp_path, horde.base_url, safety=safety)
    built = build_services(build_runtime(settings, clock=clock))
    await built.start()
    return built


@pytest.fixture
async def services(tmp_path: Path, horde: FakeHorde, clock: TestClock) -> AsyncIterator[Services]:
    built = await build(tmp_path, horde, clock, user_burst=2, user_per_minute=6)
    try:
        yield built
    finally:
        await built.close()


# --- settings and helpers ---------------------------------------------------------------------------


def test_settings_defaults_and_values() -> None:
    d = SafetySettings.from_section({})
    assert d.cooldown_steps == (0, 300, 1800, 86400)
    assert d.ip_timeout_steps == (180, 540, 900)
    assert d.review_file == "data/safety_review.txt"
    assert d.allow_nsfw_in_dms is False
    s = SafetySettings.from_section({"cooldown_steps": [60, 600], "allow_nsfw_in_dms": True, "user_burst": 9})
    assert s.cooldown_steps == (60, 600) and s.allow_nsfw_in_dms and s.user_burst == 9


def test_example_config_matches_the_defaults() -> None:
    from cryptography.fernet import Fernet

    from bot.config import load_settings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    env = {"DISCORD_TOKEN": "x", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    settings = load_settings(example, env=env)
    assert SafetySettings.from_section(settings.section("safety")) == SafetySettings()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"cooldown_steps": []}, "safety.cooldown_steps"),
        ({"cooldown_steps": [60, -1]}, "safety.cooldown_steps"),
        ({"cooldown_steps": "300"}, "safety.cooldown_steps"),
        ({"ip_timeout_steps": [0]}, "safety.ip_timeout_steps"),
        ({"strike_window": 10}, "safety.strike_window"),
        ({"user_per_minute": 0}, "safety.user_per_minute"),
        ({"guild_burst": 0}, "safety.guild_burst"),
        ({"review_file": " "}, "safety.review_file"),
        ({"allow_nsfw_in_dms": "yes"}, "safety.allow_nsfw_in_dms"),
        ({"image_check_timeout": 1}, "safety.image_check_timeout"),
    ],
)
def test_bad_settings_name_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SafetySettings.from_section(section)


def test_wait_text_rounds_up() -> None:
    assert wait_text(0.2) == "1 second"
    assert wait_text(45) == "45 seconds"
    assert wait_text(60) == "1 minute"
    assert wait_text(299.5) == "5 minutes"
    assert wait_text(1619) == "27 minutes"
    assert wait_text(86400) == "24 hours"


def test_code_block_keeps_member_text_inert() -> None:
    block = code_block("```@everyone **bold**```", 100)
    assert block.startswith("```\n") and block.endswith("\n```")
    assert block.count("```") == 2  # the member can't close the block
    long = code_block("a" * 50 + "b" * 50, 21)
    assert long.startswith("```\naaaa") and long.rstrip("`\n").endswith("bbbb") and "…" in long


# --- NSFW policy ----------------------------------------------------------------------------------


async def test_nsfw_only_in_nsfw_channels_of_guilds_that_allow_it(services: Services) -> None:
    safety = services.safety
    assert await safety.nsfw_allowed(guild_id=GUILD, channel_nsfw=True, is_dm=False)
    assert not await safety.nsfw_allowed(guild_id=GUILD, channel_nsfw=False, is_dm=False)
    await services.guild_config.update(GUILD, nsfw_policy="off")
    assert not await safety.nsfw_allowed(guild_id=GUILD, channel_nsfw=True, is_dm=False)
    # DMs: never, by default.
    assert not await safety.nsfw_allowed(guild_id=None, channel_nsfw=False, is_dm=True)


async def test_nsfw_in_dms_when_configured(tmp_path: Path, horde: FakeHorde, clock: TestClock) -> None:
    built = await build(tmp_path, horde, clock, allow_nsfw_in_dms=True)
    try:
        assert await built.safety.nsfw_allowed(guild_id=None, channel_nsfw=False, is_dm=True)
    finally:
        await built.close()


async def test_image_check_in_an_nsfw_channel_is_skipped(services: Services, horde: FakeHorde) -> None:
    await services.guild_config.update(GUILD, alchemy_nsfw_check=True)
    await services.safety.check_image_safe(
        guild_id=GUILD, user_id=ALICE, source_image="not read", channel_nsfw=True, is_dm=False
    )
    assert horde.count("POST", r"/interrogate/async") == 0


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_image_refused_when_the_horde_judges_it_nsfw(services: Services, horde: FakeHorde) -> None:
    await services.guild_config.update(GUILD, alchemy_nsfw_check=True)
    horde.autopilot(start_after=1, finish_after=1)  # the Horde's workers answer at the first poll
    horde.autopilot_form_results["nsfw"] = {"nsfw": True}
    # The image as its request sends it: checked and converted once, by the feature that uses it.
    image = await services.alchemy.prepare(png())
    with pytest.raises(ImageRefusedError):
        await services.safety.check_image_safe(
            guild_id=GUILD, user_id=ALICE, source_image=image, channel_nsfw=False, is_dm=False
        )
    horde.autopilot_form_results["nsfw"] = {"nsfw": False}
    await services.safety.check_image_safe(
        guild_id=GUILD, user_id=ALICE, source_image=image, channel_nsfw=False, is_dm=False
    )
    # Each check is the Horde's `nsfw` form alone, asked for the member (not linked: the anonymous key).
    assert [[form.name for form in r.forms] for r in horde.interrogations] == [["nsfw"], ["nsfw"]]
    assert [c.user_id for c in horde.calls_to(r"/interrogate/async$", "POST")] == [0, 0]


# --- prompts, cooldowns and incidents ---------------------------------------------------------------


async def test_refusals_escalate_along_the_steps(services: Services, clock: TestClock) -> None:
    safety = services.safety
    messages = []
    for _ in range(5):
        with pytest.raises(PromptRefusedError) as refused:
            await safety.check_prompt(guild_id=GUILD, user_id=ALICE, prompt="loli nude")
        messages.append(refused.value.message)
        until = await safety.cooldown_until(ALICE)
        assert until is not None
        clock.t += max(0.0, (until - clock.now()).total_seconds()) + 1
    assert messages[0] == REFUSED
    assert [m.removeprefix(REFUSED) for m in messages[1:]] == [
        " Your requests are paused for 5 minutes.",
        " Your requests are paused for 30 minutes.",
        " Your requests are paused for 24 hours.",
        " Your requests are paused for 24 hours.",
    ]
    # A day after the last cooldown ended, the steps start again.
    clock.t += 86400 + 1
    with pytest.raises(PromptRefusedError) as fresh:
        await safety.check_prompt(guild_id=GUILD, user_id=ALICE, prompt="loli nude")
    assert fresh.value.message == REFUSED
    # Allowed prompts pass; other members are unaffected.
    await safety.check_prompt(guild_id=GUILD, user_id=BOB, prompt="a child in a playground")


async def test_cooldown_blocks_even_harmless_prompts(services: Services, clock: TestClock) -> None:
    safety = services.safety
    for _ in range(2):
        with pytest.raises(PromptRefusedError):
            await safety.check_prompt(guild_id=None, user_id=ALICE, prompt="l0l1 naked")
    with pytest.raises(RateLimitedError, match="Try again in 5 minutes") as limited:
        await safety.check_prompt(guild_id=None, user_id=ALICE, prompt="a cat")
    assert limited.value.retry_after == pytest.approx(300)
    clock.t += 301
    await safety.check_prompt(guild_id=None, user_id=ALICE, prompt="a cat")


async def test_corrupt_prompt_incident_pauses_and_records(
    services: Services, clock: TestClock, tmp_path: Path
) -> None:
    safety = services.safety
    await safety.on_horde_rejection(
        guild_id=GUILD, user_id=ALICE, prompt="p1", negative="old, adult", rc="CorruptPrompt"
    )
    with pytest.raises(RateLimitedError, match="Try again in 3 minutes"):
        await safety.check_horde_available()
    with pytest.raises(RateLimitedError, match="Try again in 30 minutes"):
        await safety.check_cooldown(ALICE)
    [line] = (tmp_path / "safety_review.txt").read_text().splitlines()
    assert json.loads(line) == {
        "time": clock.now().isoformat(),
        "rc": "CorruptPrompt",
        "prompt": "p1",
        "negative": "old, adult",
    }
    clock.t += 181
    await safety.check_horde_available()
    assert await safety.ip_blocked_until() is None
    # Other return codes are not incidents.
    await safety.on_horde_rejection(guild_id=GUILD, user_id=BOB, prompt="p", negative=None, rc="KudosUpfront")
    await safety.check_horde_available()
    await safety.check_cooldown(BOB)


async def test_unwritable_review_file_does_not_break_the_incident(
    tmp_path: Path, horde: FakeHorde, clock: TestClock
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    built = await build(tmp_path, horde, clock, review_file=str(blocker / "review.txt"))
    try:
        await built.safety.on_horde_rejection(
            guild_id=None, user_id=ALICE, prompt="p", negative=None, rc="TimeoutIP", retry_after=60
        )
        with pytest.raises(RateLimitedError, match="Try again in 1 minute"):
            await built.safety.check_horde_available()
    finally:
        await built.close()


# --- rate limits --------------------------------------------------------------------------------------


async def test_member_bucket_refills_over_time(services: Services, clock: TestClock) -> None:
    safety = services.safety
    safety.take_request(user_id=ALICE, guild_id=GUILD)
    safety.take_request(user_id=ALICE, guild_id=GUILD)
    with pytest.raises(RateLimitedError, match=r"too fast\. Try again in 10 seconds") as limited:
        safety.take_request(user_id=ALICE, guild_id=GUILD)
    assert limited.value.retry_after == pytest.approx(10)
    safety.take_request(user_id=BOB, guild_id=GUILD)  # buckets are per member
    clock.t += 10
    safety.take_request(user_id=ALICE, guild_id=GUILD)
    with pytest.raises(RateLimitedError):
        safety.take_request(user_id=ALICE, guild_id=GUILD)


async def test_gate_checks_cooldown_pause_and_buckets(services: Services, clock: TestClock) -> None:
    safety = services.safety
    await safety.on_horde_rejection(guild_id=None, user_id=ALICE, prompt="p", negative=None, rc="TimeoutIP")
    with pytest.raises(UserFacingError, match="paused after refused prompts"):
        await safety.gate(user_id=ALICE, guild_id=None)
    with pytest.raises(UserFacingError, match="paused requests from this bot"):
        await safety.gate(user_id=BOB, guild_id=None)
    clock.t += 181
    await safety.gate(user_id=BOB, guild_id=None)
