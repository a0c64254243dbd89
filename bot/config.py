"""Settings: `config.toml` for behaviour, the environment (or `.env`) for secrets.

Every external URL and interval is a setting so that tests and self-hosters can point the bot anywhere.
A bad value raises `ConfigError` naming the key; `run.py` prints that as one line.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet

T = TypeVar("T")

ANON_API_KEY = "0000000000"
DEFAULT_HORDE_URL = "https://aihorde.net/api"
DEFAULT_RATINGS_URL = "https://ratings.aihorde.net/api/v1"
DEFAULT_MODEL_REFERENCE_URL = (
    "https://raw.githubusercontent.com/Haidra-Org/AI-Horde-image-model-reference/main/stable_diffusion.json"
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A configuration value is missing or invalid. The message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class DiscordSettings:
    token: str
    api_base_url: str | None = None
    gateway_url: str | None = None
    owner_ids: tuple[int, ...] = ()
    dev_guild_ids: tuple[int, ...] = ()
    sync_on_start: bool = False
    # Sharding: None lets discord.py ask Discord for the recommended count and run every shard here;
    # several processes each set the same count and their own shard ids.
    shard_count: int | None = None
    shard_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class HordeSettings:
    api_url: str = DEFAULT_HORDE_URL
    contact: str = "https://github.com/hordebot/hordebot"
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    ratings_url: str = DEFAULT_RATINGS_URL
    model_reference_url: str = DEFAULT_MODEL_REFERENCE_URL


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///data/hordebot.db"
    # Connections kept open (and the extra ones opened under a burst, closed again when idle): a session
    # reuses a pooled connection instead of opening one (for SQLite: a thread, a file, pragmas) each time.
    pool_size: int = 5
    max_overflow: int = 10


@dataclass(frozen=True)
class SecuritySettings:
    secret_key: str
    secret_key_file: str = "data/secret.key"  # noqa: S105 - a path, not a secret
    secret_key_generated: bool = False


@dataclass(frozen=True)
class SchedulerSettings:
    tick_seconds: float = 1.0


@dataclass(frozen=True)
class Settings:
    discord: DiscordSettings
    security: SecuritySettings
    horde: HordeSettings = field(default_factory=HordeSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    log_level: str = "INFO"
    # Feature sections are kept raw here and parsed by the feature that owns them, so a new feature
    # adds its settings without touching this module's core dataclasses.
    raw: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(name, "must be a table")
        return value


# --- value readers: each names the full key in its error -------------------------------------------


def _get(table: Mapping[str, Any], section: str, key: str, kind: type[T], default: T) -> T:
    if key not in table:
        return default
    value = table[key]
    full = f"{section}.{key}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError(full, "must be an integer")
    if not isinstance(value, kind):
        raise ConfigError(full, f"must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _url(value: str, key: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    if not any(value.startswith(f"{s}://") for s in schemes) or len(value) < len(schemes[0]) + 4:
        raise ConfigError(key, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value.rstrip("/")


def _positive(value: float, key: str) -> float:
    if value <= 0:
        raise ConfigError(key, "must be greater than 0")
    return value


def _ids(table: Mapping[str, Any], section: str, key: str) -> tuple[int, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ConfigError(f"{section}.{key}", "must be a list of Discord ids (positive integers)")
    return tuple(value)


def _shards(d: Mapping[str, Any]) -> dict[str, Any]:
    count = _get(d, "discord", "shard_count", int, 0)
    if "shard_count" in d and not 1 <= count <= 10_000:
        raise ConfigError("discord.shard_count", "must be between 1 and 10000")
    ids = d.get("shard_ids", [])
    if not isinstance(ids, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
        raise ConfigError("discord.shard_ids", "must be a list of shard numbers")
    if ids and not count:
        raise ConfigError("discord.shard_ids", "needs discord.shard_count (the total over all processes)")
    if any(not 0 <= v < count for v in ids) or len(set(ids)) != len(ids):
        raise ConfigError("discord.shard_ids", f"must be different numbers from 0 to {count - 1}")
    return {"shard_count": count or None, "shard_ids": tuple(ids)}


def reader(section: Mapping[str, Any], name: str) -> Callable[[str, type[T], T], T]:
    """A typed getter for a feature's section: `get("max_n", int, 4)`."""

    def get(key: str, kind: type[T], default: T) -> T:
        return _get(section, name, key, kind, default)

    return get


# --- secrets ------------------------------------------------------------------------------------------


def split_secret_keys(value: str) -> list[str]:
    """`HORDEBOT_SECRET_KEY` holds one Fernet key, or several (newest first) separated by commas, spaces or
    new lines while keys are rotated (`python run.py rotate-keys`)."""
    return [key for key in re.split(r"[,\s]+", value.strip()) if key]


def _load_secret_key(env: Mapping[str, str], key_file: Path) -> tuple[str, bool]:
    """The Fernet key(s): from the environment, else from the key file, else a new one written 0600."""
    value = env.get("HORDEBOT_SECRET_KEY", "").strip()
    generated = False
    if not value and key_file.exists():
        value = key_file.read_text().strip()
    if not value:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        value = Fernet.generate_key().decode()
        # Create with 0600 from the start: no window where the key is world-readable.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        generated = True
    keys = split_secret_keys(value)
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            which = f"key {position} of {len(keys)}" if len(keys) > 1 else "it"
            raise ConfigError(
                "HORDEBOT_SECRET_KEY",
                f"{which} is not a valid Fernet key (44 url-safe base64 characters; several keys are "
                "separated by commas, newest first)",
            ) from None
    return ",".join(keys), generated


def load_settings(
    config_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read `config_path` and secrets from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    path = Path(config_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found (copy config.example.toml to config.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None

    def table(name: str) -> Mapping[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(name, "must be a table")
        return value

    d = table("discord")
    token = env.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise ConfigError("DISCORD_TOKEN", "missing: set it in the environment or in .env")
    api_base = _get(d, "discord", "api_base_url", str, "")
    gateway = _get(d, "discord", "gateway_url", str, "")
    discord_settings = DiscordSettings(
        token=token,
        api_base_url=_url(api_base, "discord.api_base_url") if api_base else None,
        gateway_url=_url(gateway, "discord.gateway_url", ("ws", "wss")) if gateway else None,
        owner_ids=_ids(d, "discord", "owner_ids"),
        dev_guild_ids=_ids(d, "discord", "dev_guild_ids"),
        sync_on_start=_get(d, "discord", "sync_on_start", bool, False),
        **_shards(d),
    )

    h = table("horde")
    defaults = HordeSettings()
    horde = HordeSettings(
        api_url=_url(_get(h, "horde", "api_url", str, defaults.api_url), "horde.api_url"),
        contact=_get(h, "horde", "contact", str, defaults.contact).strip(),
        timeout=_positive(_get(h, "horde", "timeout", float, defaults.timeout), "horde.timeout"),
        connect_timeout=_positive(
            _get(h, "horde", "connect_timeout", float, defaults.connect_timeout), "horde.connect_timeout"
        ),
        max_retries=_get(h, "horde", "max_retries", int, defaults.max_retries),
        backoff_base=_positive(
            _get(h, "horde", "backoff_base", float, defaults.backoff_base), "horde.backoff_base"
        ),
        backoff_cap=_positive(
            _get(h, "horde", "backoff_cap", float, defaults.backoff_cap), "horde.backoff_cap"
        ),
        ratings_url=_url(_get(h, "horde", "ratings_url", str, defaults.ratings_url), "horde.ratings_url"),
        model_reference_url=_url(
            _get(h, "horde", "model_reference_url", str, defaults.model_reference_url),
            "horde.model_reference_url",
        ),
    )
    if not horde.contact or any(c.isspace() for c in horde.contact):
        raise ConfigError("horde.contact", "must be a non-empty contact (URL or e-mail) without spaces")
    if not 0 <= horde.max_retries <= 10:
        raise ConfigError("horde.max_retries", "must be between 0 and 10")

    db = table("database")
    db_url = _get(db, "database", "url", str, DatabaseSettings().url)
    if not db_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("database.url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    pool_size = _get(db, "database", "pool_size", int, DatabaseSettings.pool_size)
    if not 1 <= pool_size <= 100:
        raise ConfigError("database.pool_size", "must be between 1 and 100")
    max_overflow = _get(db, "database", "max_overflow", int, DatabaseSettings.max_overflow)
    if not 0 <= max_overflow <= 100:
        raise ConfigError("database.max_overflow", "must be between 0 and 100")

    sec = table("security")
    key_file = _get(sec, "security", "secret_key_file", str, SecuritySettings.secret_key_file)
    secret, generated = _load_secret_key(env, Path(key_file))

    sched = table("scheduler")
    tick = _positive(_get(sched, "scheduler", "tick_seconds", float, 1.0), "scheduler.tick_seconds")

    lg = table("logging")
    level = _get(lg, "logging", "level", str, "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError("logging.level", f"must be one of {', '.join(LOG_LEVELS)}")

    return Settings(
        discord=discord_settings,
        security=SecuritySettings(
            secret_key=secret, secret_key_file=key_file, secret_key_generated=generated
        ),
        horde=horde,
        database=DatabaseSettings(url=db_url, pool_size=pool_size, max_overflow=max_overflow),
        scheduler=SchedulerSettings(tick_seconds=tick),
        log_level=level,
        raw=data,
    )
