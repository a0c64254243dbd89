from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from bot import config_docs
from bot.config import SECTIONS, ConfigError, Settings, load_settings

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


def test_a_bad_value_is_one_line_naming_the_file_the_key_the_rule_and_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[generation]\nmax_steps = 900\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env(tmp_path))
    assert str(info.value) == f"{path}: generation.max_steps must be between 1 and 500 (got 900)"
    assert info.value.key == "generation.max_steps"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A typo'd key is refused, naming it and the key it probably meant.
        ("[generation]\nmax_stepz = 40", "generation.max_stepz is not a setting (did you mean max_steps?)"),
        ("[generaton]\nmax_steps = 40", "[generaton] is not a section (did you mean [generation]?)"),
        ("[raw]\nmax_steps = 40", "[raw] is not a section"),
        ("[safety]\ncooldown_steps = []", "safety.cooldown_steps must list at least 1 item (got [])"),
        # TOML's types are taken as written: no "30" for 30, no 1 for true.
        ('[kudos]\ntransfer_max = "30"', 'kudos.transfer_max must be a whole number (got "30")'),
        ("[alchemy]\nslow_workers = 1", "alchemy.slow_workers must be true or false (got 1)"),
        ("[info]\npage_size = 2.5", "info.page_size must be a whole number (got 2.5)"),
        ("[safety]\ncooldown_steps = [0, -5]", "safety.cooldown_steps item 2 must be at least 0 (got -5)"),
        (
            "[generation]\ndefault_sampler = 'k_fancy'",
            "generation.default_sampler must be one of k_euler_a, k_euler",
        ),
        (
            "[generation]\ndefault_width = 500",
            "generation.default_width must be a multiple of 64 from 64 to 3072",
        ),
        (
            '[logging]\nlevel = "LOUD"',
            'logging.level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got "LOUD")',
        ),
        ("[horde]\ntimeout = nan", "horde.timeout must be greater than 0 (got nan)"),
        # Cross-key rules name the key to change.
        (
            "[generation_jobs]\nmin_interval = 20\nmax_interval = 10",
            "generation_jobs.max_interval must be between min_interval (20.0) and 300 seconds (got 10.0)",
        ),
        (
            "[discord]\nshard_count = 2\nshard_ids = [0, 2]",
            "discord.shard_ids must be different numbers from 0 to 1",
        ),
    ],
)
def test_invalid_settings_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env(tmp_path))
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(
    ("section", "key"),
    [("discord", "token"), ("security", "secret_key"), ("security", "secret_key_generated")],
)
def test_secrets_are_refused_in_the_file(tmp_path: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, f'[{section}]\n{key} = "x"\n'), env(tmp_path))
    assert info.value.key == f"{section}.{key}"
    assert "can't be set in this file: secrets come from DISCORD_TOKEN and HORDEBOT_SECRET_KEY" in str(
        info.value
    )


def test_the_environments_errors_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), {"HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()})
    assert str(info.value) == "environment: DISCORD_TOKEN is missing: set it in the environment or in .env"


def test_every_section_is_typed_on_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "[kudos]\nhistory_limit = 5\n[generation]\ndefault_model = ' '\n"), env(tmp_path)
    )
    assert settings.kudos.history_limit == 5
    assert settings.generation.default_model is None  # blank means "not set"
    assert settings.safety.cooldown_steps == (0, 300, 1800, 86400)  # lists are tuples, as before
    not_sections = {"raw", "moved_keys"}  # the file as read, and the old key names it still uses
    assert {model.name for model in SECTIONS} == {
        f.name for f in dataclasses.fields(Settings)
    } - not_sections, "every section model is a field of Settings"


def test_settings_are_frozen_and_replace_validates(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, env(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.kudos.history_limit = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        dataclasses.replace(settings.kudos, history_limit=99)


def test_every_key_declares_its_meaning_and_every_number_its_bounds() -> None:
    """The generated reference (python -m bot.config_docs) can only be as good as the models."""
    problems: list[str] = []
    for model in SECTIONS:
        doc = model.__doc__ or ""
        if not doc.strip() or doc.startswith(model.__name__ + "("):  # dataclass's own: the signature
            problems.append(f"[{model.name}] ({model.__name__}) has no docstring to introduce it")
        for name, info in config_docs.keys(model):
            if not (info.description or "").strip():
                problems.append(f"{model.name}.{name} has no description")
            rule = config_docs.allowed(info)
            if rule.startswith(("whole number", "number")) and "," not in rule and "≤" not in rule:
                problems.append(f"{model.name}.{name} declares no bounds ({rule})")
    assert not problems, "\n".join(problems)


def test_a_moved_key_still_works_under_its_old_name(tmp_path: Path) -> None:
    # A config.toml copied from an older config.example.toml (which lists every key) has [ratings] keep_days:
    # it keeps starting the bot with the same effect, and the log says where the key lives now (run.py).
    path = write(tmp_path, "[ratings]\nkeep_days = 7\n")
    settings = load_settings(path, env(tmp_path))
    assert settings.retention.rating_images == 7
    assert settings.moved_keys == (
        f"{path}: ratings.keep_days is now retention.rating_images (read from the old place)",
    )
    both = load_settings(
        write(tmp_path, "[ratings]\nkeep_days = 7\n[retention]\nrating_images = 7\n"), env(tmp_path)
    )
    assert both.retention.rating_images == 7
    assert load_settings(write(tmp_path, "[retention]\nrating_images = 9\n"), env(tmp_path)).moved_keys == ()


def test_a_moved_key_set_differently_in_both_places_is_refused_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[ratings]\nkeep_days = 7\n[retention]\nrating_images = 30\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env(tmp_path))
    assert str(info.value) == (
        f"{path}: ratings.keep_days is now retention.rating_images, which is set too, to 30: keep only "
        "retention.rating_images"
    )
    assert info.value.key == "ratings.keep_days"
