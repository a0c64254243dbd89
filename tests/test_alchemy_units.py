"""Small pieces of the alchemy/text feature that are easier to pin down directly."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import ConfigError
from bot.horde.cache import TTLCache
from bot.services.alchemy import AlchemySettings
from bot.services.info import InfoSettings
from bot.services.text import TextSettings, clean_answer, split_for_discord
from tests.support.clock import TestClock


async def test_cache_single_flight_and_expiry() -> None:
    clock = TestClock(t=0.0)
    cache = TTLCache(clock)
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    waiting = [asyncio.create_task(cache.get_or_load("k", 10, load)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1, 1, 1, 1, 1]
    assert calls == 1
    assert await cache.get_or_load("k", 10, load) == 1
    clock.t = 11
    assert await cache.get_or_load("k", 10, load) == 2


async def test_cache_does_not_keep_failures() -> None:
    cache = TTLCache(TestClock(t=0.0))

    async def boom() -> int:
        raise RuntimeError("down")

    async def fine() -> int:
        return 7

    with pytest.raises(RuntimeError):
        await cache.get_or_load("k", 10, boom)
    assert await cache.get_or_load("k", 10, fine) == 7


def test_split_for_discord_keeps_every_word_and_the_limit() -> None:
    text = "\n\n".join(" ".join(f"w{i}-{j}" for j in range(150)) for i in range(6))
    chunks = split_for_discord(text, 2000)
    assert all(len(c) <= 2000 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    unbroken = "x" * 4500
    assert [len(c) for c in split_for_discord(unbroken, 2000)] == [2000, 2000, 500]


def test_clean_answer_cuts_other_speakers() -> None:
    assert clean_answer(" Sure!\nalice: and you?\nHorde: fine", ["alice", "Horde"]) == "Sure!"
    assert clean_answer("no speakers here", ["alice"]) == "no speakers here"


@pytest.mark.parametrize(
    ("section", "factory", "key"),
    [
        ({"poll_interval": 0.5}, AlchemySettings.from_section, "alchemy.poll_interval"),
        ({"default_upscaler": "nope"}, AlchemySettings.from_section, "alchemy.default_upscaler"),
        ({"poll_interval": 0.2}, TextSettings.from_section, "text.poll_interval"),
        ({"chat_bot_name": "a:b"}, TextSettings.from_section, "text.chat_bot_name"),
        ({"page_size": 40}, InfoSettings.from_section, "info.page_size"),
        ({"models_ttl": "soon"}, InfoSettings.from_section, "info.models_ttl"),
    ],
)
def test_bad_settings_name_the_key(section: dict[str, object], factory: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        factory(section)  # type: ignore[operator]
    assert caught.value.key == key


def test_example_config_sections_are_the_defaults(tmp_path: object) -> None:
    from pathlib import Path

    from cryptography.fernet import Fernet

    from bot.config import load_settings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    env = {"DISCORD_TOKEN": "x", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    settings = load_settings(example, env=env)
    assert AlchemySettings.from_section(settings.section("alchemy")) == AlchemySettings()
    assert TextSettings.from_section(settings.section("text")) == TextSettings()
    assert InfoSettings.from_section(settings.section("info")) == InfoSettings()
