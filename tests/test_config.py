from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.config import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body)
    return path


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode(), **extra}


def test_example_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, env(tmp_path))
    assert settings.horde.api_url == "https://aihorde.net/api"
    assert settings.database.url == "sqlite+aiosqlite:///data/hordebot.db"
    assert settings.discord.api_base_url is None
    assert settings.log_level == "INFO"


def test_missing_token_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        load_settings(EXAMPLE, {"HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()})


def test_missing_file_says_to_copy_the_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy config.example.toml"):
        load_settings(tmp_path / "nope.toml", env(tmp_path))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[horde]\napi_url = "ftp://x"', "horde.api_url"),
        ("[horde]\ntimeout = -1", "horde.timeout"),
        ('[horde]\ntimeout = "slow"', "horde.timeout"),
        ('[horde]\ncontact = "a b"', "horde.contact"),
        ('[database]\nurl = "mysql://x"', "database.url"),
        ('[discord]\ngateway_url = "http://x"', "discord.gateway_url"),
        ('[discord]\nowner_ids = ["me"]', "discord.owner_ids"),
        ('[logging]\nlevel = "LOUD"', "logging.level"),
        ("horde = 3", "horde"),
        ("[horde\n", "not valid TOML"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, body), env(tmp_path))
    assert key in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_missing_secret_key_is_generated_with_owner_only_permissions(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret.key"
    path = write(tmp_path, f'[security]\nsecret_key_file = "{key_file}"\n')
    settings = load_settings(path, {"DISCORD_TOKEN": "tok"})
    assert settings.security.secret_key_generated
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Fernet(settings.security.secret_key.encode())
    # Second start: the stored key is reused, not regenerated.
    again = load_settings(path, {"DISCORD_TOKEN": "tok"})
    assert again.security.secret_key == settings.security.secret_key
    assert not again.security.secret_key_generated


def test_invalid_secret_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HORDEBOT_SECRET_KEY"):
        load_settings(write(tmp_path, ""), {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": "short"})


def test_feature_sections_are_available_raw(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[generation]\nmax_n = 4\n"), env(tmp_path))
    assert settings.section("generation")["max_n"] == 4
    assert settings.section("absent") == {}
