"""The admin rules without Discord: settings, emoji parsing, import parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.config import ConfigError, load_settings
from bot.errors import InvalidInputError
from bot.services.admin import AdminSettings, load_admin_settings, parse_emoji, parse_import


def test_example_config_admin_section_is_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    env = {"DISCORD_TOKEN": "x", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    assert load_admin_settings(load_settings(example, env=env)) == AdminSettings()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_kudos_emoji_amount": 0}, "admin.max_kudos_emoji_amount"),
        ({"max_blocked_words": -1}, "admin.max_blocked_words"),
        ({"max_import_bytes": 10}, "admin.max_import_bytes"),
        ({"confirm_timeout": 5}, "admin.confirm_timeout"),
        ({"max_kudos_tiers": "ten"}, "admin.max_kudos_tiers"),
    ],
)
def test_bad_admin_settings_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AdminSettings.from_section(section)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("👍", "👍"),
        (" ❤️ ", "❤"),
        ("1️⃣", "1⃣"),
        ("🇫🇷", "🇫🇷"),
        ("👩‍💻", "👩‍💻"),
        ("👍🏽", "👍🏽"),
        ("🏴󠁧󠁢󠁥󠁮󠁧󠁿", "🏴󠁧󠁢󠁥󠁮󠁧󠁿"),
        ("<:horde:123456789012345678>", "123456789012345678"),
        ("<a:spin:123456789012345678>", "123456789012345678"),
    ],
)
def test_emojis_are_keyed_like_reactions(typed: str, key: str) -> None:
    assert parse_emoji(typed)[0] == key


@pytest.mark.parametrize("typed", ["", "a", "ok", "12", ":smile:", "<:x:1>", "👍👍", "🇫🇷🇫🇷", "👍ok", "é"])
def test_non_emojis_are_refused(typed: str) -> None:
    with pytest.raises(InvalidInputError, match="not an emoji"):
        parse_emoji(typed)


def test_import_accepts_a_bom_and_rejects_deep_nesting() -> None:
    assert parse_import(b'\xef\xbb\xbf{"max_n": 3}').max_n == 3
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_import(b"[" * 100_000 + b"]" * 100_000)
