"""Settings: `config.toml` for behaviour, the environment (or `.env`) for secrets.

One pydantic model per `[section]`, every key a `Field` with its bounds and description: README's
configuration reference and config.example.toml are generated from them (`python -m bot.config_docs`).
Every external URL and interval is a setting so that tests and self-hosters can point the bot anywhere.
A bad value raises `ConfigError`, one line naming the key, which `run.py` prints before exiting with 2.

The `[horde]` and `[horde_pacer]` models live with the code that reads them (bot/horde/), which may not
import this module; everything else is here, and the services import their section from here.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from cryptography.fernet import Fernet
from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from bot.config_model import (
    NOT_IN_FILE,
    SECTION_CONFIG,
    Bool,
    Check,
    ConfigError,
    Float,
    Int,
    KeyProblem,
    NoTrailingSlash,
    Section,
    Str,
    Stripped,
    config_error,
    fields_of,
    in_file,
    not_a_table,
    one_of,
    unknown_section,
    url,
)
from bot.horde import alchemy as alchemy_forms
from bot.horde.generation import SAMPLERS
from bot.horde.limits import (
    MAX_CFG,
    MAX_N,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STRENGTH,
    MAX_TEXT_CONTEXT,
    MAX_TEXT_LENGTH,
    MIN_N,
    MIN_PIXELS,
    MIN_SIDE,
    MIN_STEPS,
    MIN_STRENGTH,
    MIN_TEXT_CONTEXT,
    MIN_TEXT_LENGTH,
    SIDE_STEP,
)
from bot.horde.pacer import PacerSettings
from bot.horde.settings import (
    DEFAULT_HORDE_URL,
    DEFAULT_MODEL_REFERENCE_URL,
    DEFAULT_RATINGS_URL,
    CivitaiSettings,
    HordeSettings,
)

__all__ = [
    "ANON_API_KEY",
    "DEFAULT_HORDE_URL",
    "DEFAULT_MODEL_REFERENCE_URL",
    "DEFAULT_RATINGS_URL",
    "SECTIONS",
    "CivitaiSettings",
    "ConfigError",
    "HordeSettings",
    "PacerSettings",
    "Settings",
    "load_settings",
    "split_secret_keys",
]

ANON_API_KEY = "0000000000"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIB = 1024 * 1024
# The bot's own cap on an uploaded image (the Horde takes up to 3072 px a side, not a byte count).
DEFAULT_UPLOAD_BYTES = 10 * MIB

DiscordId = Annotated[Int, Field(gt=0)]
Seconds = Annotated[Int, Field(ge=0)]


def _none_if_blank(value: Any) -> Any:
    """A key written empty ("" or 0) means the same as leaving it out."""
    return None if value in ("", 0) and not isinstance(value, bool) else value


Blank = BeforeValidator(_none_if_blank)
Side = Annotated[
    Int,
    AfterValidator(
        Check(
            f"a multiple of {SIDE_STEP} from {MIN_SIDE} to {MAX_SIDE}",
            lambda v: v % SIDE_STEP == 0 and MIN_SIDE <= v <= MAX_SIDE,
        )
    ),
]


def _two_decimals(value: float) -> bool:
    return abs(value * 100 - round(value * 100)) < 1e-6


# --- [discord] [database] [security] [scheduler] [logging] -----------------------------------------------


@dataclass(frozen=True, config=SECTION_CONFIG)
class DiscordSettings(Section, section="discord"):
    """The bot's Discord application."""

    token: Str = Field(
        description="The bot token: from `DISCORD_TOKEN` in the environment or .env, never this file.",
        json_schema_extra=NOT_IN_FILE,
    )
    api_base_url: Annotated[Annotated[Str, url("http", "https"), NoTrailingSlash] | None, Blank] = Field(
        default=None,
        description="REST base URL of a Discord-compatible server or a test double, e.g. "
        "`https://discord.com/api/v10`.",
        json_schema_extra={"unset": "Discord", "example": "https://discord.com/api/v10"},
    )
    gateway_url: Annotated[Annotated[Str, url("ws", "wss"), NoTrailingSlash] | None, Blank] = Field(
        default=None,
        description="Gateway URL override, e.g. `wss://gateway.discord.gg`. Used with `shard_count`; "
        "with automatic sharding the bot connects where the REST API's `GET /gateway/bot` says.",
        json_schema_extra={"unset": "Discord", "example": "wss://gateway.discord.gg"},
    )
    owner_ids: tuple[DiscordId, ...] = Field(
        default=(),
        description="Discord ids (integers) of the bot's owners, who may run `/sync`. Empty: the "
        "application's owner.",
    )
    dev_guild_ids: tuple[DiscordId, ...] = Field(
        default=(), description="Servers that get every command synced instantly (development)."
    )
    sync_on_start: Bool = Field(
        default=False,
        description="Publish slash commands at every start. config.example.toml turns it on for the first "
        "run; then use `/sync` when commands change.",
        json_schema_extra={"example": True},
    )
    # Sharding: None lets discord.py ask Discord for the recommended count and run every shard here;
    # several processes each set the same count and their own shard ids.
    shard_count: Int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Total number of shards over all processes. Left out: automatic, as many as Discord "
        "recommends (one per 1,000 to 2,500 servers), all in this process. "
        "See [Running at scale](#running-at-scale).",
        json_schema_extra={"unset": "automatic", "example": 4},
    )
    shard_ids: tuple[Int, ...] = Field(
        default=(),
        description="This process's shards (numbers from 0 to `shard_count` − 1; needs `shard_count`). "
        "Background work for a server (party ends, rating parties, role sync) runs only in the process "
        "holding the server's shard, `(server id >> 22) % shard_count`. Empty: every shard.",
        json_schema_extra={"example": [0, 1], "commented": True},
    )
    shutdown_grace: Float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Seconds a stopping bot gives the commands, buttons and reactions it is handling to "
        "finish (it takes no new ones meanwhile) before it stops them, then its background work and the "
        "database. Keep it below the time your service manager waits before killing the process (Docker: "
        "10 s).",
    )

    @model_validator(mode="after")
    def _shards_fit_the_count(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids and not self.shard_count:
            raise KeyProblem("shard_ids", "needs discord.shard_count (the total over all processes)")
        count = self.shard_count or 0
        if any(not 0 <= v < count for v in ids) or len(set(ids)) != len(ids):
            raise KeyProblem(
                "shard_ids", f"must be different numbers from 0 to {count - 1} (got {list(ids)})"
            )
        return self


DatabaseUrl = Annotated[
    Str,
    AfterValidator(
        Check(
            "a URL starting with sqlite+aiosqlite:// or postgresql+asyncpg://",
            lambda v: v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")),
        )
    ),
]


@dataclass(frozen=True, config=SECTION_CONFIG)
class DatabaseSettings(Section, section="database"):
    """Where the bot keeps its data."""

    url: DatabaseUrl = Field(
        default="sqlite+aiosqlite:///data/hordebot.db",
        description="SQLite (a file, relative to the working directory; four slashes for an absolute path) "
        "or PostgreSQL: `postgresql+asyncpg://user:password@host/dbname`. See [PostgreSQL](#postgresql).",
    )
    # A session reuses a pooled connection instead of opening one (for SQLite: a thread, a file, pragmas).
    pool_size: Int = Field(
        default=5,
        ge=1,
        le=100,
        description="Database connections kept open and reused by every query. SQLite runs in WAL mode "
        "with a 5 s busy timeout, so several connections share the file safely.",
    )
    max_overflow: Int = Field(
        default=10,
        ge=0,
        le=100,
        description="Extra connections opened under a burst above `pool_size`, closed again when idle.",
    )
    # Several processes on one PostgreSQL database (issue #17): shared work is leased (bot/db/leases.py).
    # At most 60: a dead process's work is taken over within 1 1/3 leases (80 s), well inside the "few
    # minutes" Discord remembers a message's nonce (`enforce_nonce`), so a result its process posted just
    # before dying is found by the nonce instead of being posted again.
    lease_seconds: Int = Field(
        default=30,
        ge=3,
        le=60,
        description="How long a process's claim on shared work (Horde jobs, kudos gifts, rating "
        "submissions) lasts without renewal; each process renews its claims every third of it. Work of a "
        "process that died is taken over by another this long after its last renewal. At most 60, so a "
        "takeover comes well within the few minutes Discord remembers a message's nonce. Results are shown "
        "in a command's reply until a minute plus 1⅔ of this before its interaction token's 15 minutes end "
        "(later, the process taking the job over could not read the reply). See "
        "[Running at scale](#running-at-scale).",
    )
    process_id: Annotated[Str, Field(min_length=1, max_length=100), Stripped] | None = Field(
        default=None,
        description="This process's name in the claims on shared work; unique among the processes on "
        "one database. Left out: made at start from the host name, the process id and a random suffix "
        "(a restarted process then waits `lease_seconds` before resuming its predecessor's work; a set "
        "name resumes it at once).",
        json_schema_extra={"unset": "automatic", "example": "bot-a"},
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class SecuritySettings(Section, section="security"):
    """Encryption of the stored API keys (the keys themselves: `HORDEBOT_SECRET_KEY`, see Quick start)."""

    secret_key: Str = Field(
        description="The Fernet key(s): from `HORDEBOT_SECRET_KEY`, else read from (or generated into) "
        "`secret_key_file`.",
        json_schema_extra=NOT_IN_FILE,
    )
    secret_key_file: Annotated[Str, Field(min_length=1), Stripped] = Field(
        default="data/secret.key",
        description="Where a generated `HORDEBOT_SECRET_KEY` is stored (mode 0600) and read back when the "
        "environment has none.",
    )
    secret_key_generated: Bool = Field(
        default=False,
        description="Whether this start generated the key (start-up warns to back it up).",
        json_schema_extra=NOT_IN_FILE,
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class SchedulerSettings(Section, section="scheduler"):
    """The background scheduler."""

    tick_seconds: Float = Field(
        default=1.0, gt=0, description="How often the background scheduler looks for due work, in seconds."
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class ImageSettings(Section, section="images"):
    """Converting members' uploads (img2img sources, alchemy inputs) and making result grids. Pillow work
    runs off the event loop in one small pool of threads: a 3072² image takes ~2 s of CPU and ~60 MB while
    it is converted, so few at a time keep the bot's memory low and leave the cores to everything else."""

    workers: Int = Field(
        default=1,
        ge=1,
        le=16,
        description="Threads converting images at once; more uploads wait their turn (each holds tens of "
        "MB while it is converted).",
    )


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


@dataclass(frozen=True, config=SECTION_CONFIG)
class LoggingSettings(Section, section="logging"):
    """What the bot logs (API keys and tokens are always redacted)."""

    level: Annotated[Str, BeforeValidator(_upper), one_of(LOG_LEVELS)] = Field(
        default="INFO", description="The least severe level logged (any case)."
    )


# --- feature sections ---------------------------------------------------------------------------------------


def _ttl(default: float, what: str) -> Any:
    return Field(default=default, ge=0, description=what)


@dataclass(frozen=True, config=SECTION_CONFIG)
class InfoSettings(Section, section="info"):
    """How long the Horde's public information is kept before asking again, in seconds (0: never cached), and
    how `/models` pages."""

    models_ttl: Float = _ttl(60.0, "`/models`, `/model` and text-model suggestions.")
    workers_ttl: Float = _ttl(
        60.0, "`/worker`, and the text workers' context sizes used by `/text` and `/chat`."
    )
    teams_ttl: Float = _ttl(300.0, "`/team`.")
    news_ttl: Float = _ttl(900.0, "`/news`.")
    stats_ttl: Float = _ttl(60.0, "`/stats` (the Horde itself refreshes these every 50 s).")
    status_ttl: Float = _ttl(30.0, "`/horde status` (heartbeat and maintenance mode).")
    page_size: Int = Field(default=10, ge=1, le=25, description="Models per page in `/models`.")
    view_timeout: Float = Field(
        default=120.0,
        ge=10,
        le=900,
        description="Seconds the Previous/Next buttons keep working; then they are removed.",
    )


OUTAGE_AFTER = (
    "Failed status checks in a row (5xx, timeouts, refused connections) before the member's reply says the "
    "Horde isn't answering and the request is safe; when it answers again the reply says so."
)


@dataclass(frozen=True, config=SECTION_CONFIG)
class AlchemySettings(Section, section="alchemy"):
    """`/describe`, `/upscale`, `/facefix`, `/strip-background` and the NSFW check of images."""

    poll_interval: Float = Field(
        default=3.0,
        ge=1,
        description="Seconds between two status checks of one alchemy request (the Horde allows 10 a "
        "second).",
    )
    outage_after: Int = Field(default=3, ge=1, le=100, description=OUTAGE_AFTER)
    max_upload_bytes: Int = Field(
        default=DEFAULT_UPLOAD_BYTES, ge=1024, le=50 * MIB, description="Largest accepted upload, in bytes."
    )
    max_side: Int = Field(
        default=MAX_SIDE,
        ge=64,
        le=MAX_SIDE,
        description="Largest accepted image side, in pixels (the Horde's limit).",
    )
    max_result_bytes: Int = Field(
        default=25 * MIB,
        ge=1,
        description="Largest result file the bot downloads to attach; larger ones are linked instead.",
    )
    default_upscaler: Annotated[Str, one_of(alchemy_forms.UPSCALERS)] = Field(
        default="RealESRGAN_x4plus", description="`/upscale` default (one of the `upscaler` choices)."
    )
    default_facefixer: Annotated[Str, one_of(alchemy_forms.FACE_FIXERS)] = Field(
        default="CodeFormers", description="`/facefix` default (one of the `fixer` choices)."
    )
    slow_workers: Bool = Field(
        default=True, description="Let slower workers take alchemy jobs (`false` costs extra kudos)."
    )


BotName = Annotated[
    Str,
    Stripped,
    AfterValidator(Check("1-32 characters without ':'", lambda v: 1 <= len(v) <= 32 and ":" not in v)),
]


@dataclass(frozen=True, config=SECTION_CONFIG)
class TextSettings(Section, section="text"):
    """`/text` and `/chat`."""

    poll_interval: Float = Field(
        default=5.0,
        ge=1,
        description="Seconds between two status checks of one text request (the Horde allows 60 a minute).",
    )
    outage_after: Int = Field(default=3, ge=1, le=100, description=OUTAGE_AFTER)
    default_max_length: Int = Field(
        default=160,
        ge=MIN_TEXT_LENGTH,
        le=MAX_TEXT_LENGTH,
        description="Answer length in tokens when the member does not choose; lowered to what the model's "
        "workers accept.",
    )
    default_max_context_length: Int = Field(
        default=2048,
        ge=MIN_TEXT_CONTEXT,
        le=MAX_TEXT_CONTEXT,
        description="Context sent, in tokens; lowered to what the model's workers accept.",
    )
    model_gone_grace: Float = Field(
        default=60.0,
        ge=0,
        description="Seconds a model may be gone (no worker serves it) before a waiting request is "
        "cancelled.",
    )
    chars_per_token: Float = Field(
        default=3.0,
        ge=1,
        le=8,
        description="Characters per token used to fit `/chat` history into a model's context (lower is "
        "safer).",
    )
    split_messages: Int = Field(
        default=3,
        ge=1,
        le=5,
        description="Answers longer than one message are split into at most this many messages, else "
        "attached.",
    )
    chat_history_turns: Int = Field(
        default=60,
        ge=2,
        le=500,
        description="Past turns of a `/chat` conversation considered when building the prompt.",
    )
    chat_bot_name: BotName = Field(default="Horde", description="The bot's name in `/chat` conversations.")


@dataclass(frozen=True, config=SECTION_CONFIG)
class RatingsSettings(Section, section="ratings"):
    """Image ratings (`/rate`, `/rate-party`, Rate buttons on shared generations). The ratings service's
    address is [`horde.ratings_url`](#horde)."""

    timeout: Float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for one answer from the ratings service, and for an image download.",
    )
    max_retries: Int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of reads (image to rate, dataset list) after 5xx or timeouts. A rating is never "
        "resent inline.",
    )
    autocomplete_timeout: Float = Field(
        default=2.0,
        gt=0,
        description="Seconds the dataset autocomplete may wait (Discord allows 3 s and autocomplete can't be "
        "deferred).",
    )
    datasets_cache_seconds: Float = Field(
        default=3600.0, ge=0, description="How long the dataset list is cached."
    )
    max_image_bytes: Int = Field(
        default=8 * MIB,
        ge=1024,
        le=25 * MIB,
        description="Largest image downloaded and attached (at most Discord's upload limit).",
    )
    serve_attempts: Int = Field(
        default=3, ge=1, description="Images tried in a row when downloads fail, before telling the member."
    )
    submit_attempts: Int = Field(
        default=5,
        ge=1,
        description="Attempts to deliver one rating when the service is down, slow or rate-limiting.",
    )
    retry_base_seconds: Float = Field(
        default=30.0,
        gt=0,
        description="First wait before resending an undelivered rating (or a rating party's results Discord "
        "refused); doubles each attempt (jittered). Own-generation ratings never go faster than every 12 s.",
    )
    retry_check_seconds: Float = Field(
        default=5.0, gt=0, description="How often the bot looks for ratings to resend."
    )
    party_seconds: Float = Field(
        default=300.0, ge=30, le=3600, description="How long a `/rate-party` stays open."
    )
    generation_window_seconds: Float = Field(
        default=1200.0,
        ge=0,
        description="How long after it finished a generation can still be rated (the Horde forgets "
        "requests).",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class AdminSettings(Section, section="admin"):
    """Caps on what one server may configure with `/config` (per-server settings need no restart)."""

    max_kudos_emoji_amount: Int = Field(
        default=1000, ge=1, description="Largest kudos amount one reaction emoji may give."
    )
    max_kudos_emojis: Int = Field(default=20, ge=1, description="Most kudos emojis per server.")
    max_blocked_words: Int = Field(default=200, ge=1, description="Most blocked terms per server.")
    max_generation_channels: Int = Field(
        default=50, ge=1, description="Most channels in the generation allow-list."
    )
    max_kudos_tiers: Int = Field(default=10, ge=1, description="Most kudos tiers per server.")
    max_import_bytes: Int = Field(
        default=65536, ge=1024, le=8 * MIB, description="Largest file `/config import` accepts, in bytes."
    )
    confirm_timeout: Float = Field(
        default=300.0, ge=10, le=840, description="Seconds the import's confirmation buttons keep working."
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class GenerationDefaults(Section, section="generation"):
    """`/generate` defaults and limits for every server; a server's own settings (`/config generation`) take
    precedence. Details: [docs/features/generation-options.md](docs/features/generation-options.md)."""

    default_model: Annotated[Str | None, Blank, Stripped] = Field(
        default=None,
        description="Model used when the member picks none.",
        json_schema_extra={"unset": "any model a worker has", "example": "AlbedoBase XL (SDXL)"},
    )
    default_steps: Int = Field(
        default=30, ge=MIN_STEPS, le=MAX_STEPS, description="Steps when the member gives none."
    )
    default_width: Annotated[Side | None, Blank] = Field(
        default=None,
        description="Width when the member gives none. Native sizes: 512 for SD 1.5, 768 for SD 2, 1024 for "
        "SDXL, Flux, Cascade.",
        json_schema_extra={"unset": "the model's native size", "example": 512},
    )
    default_height: Annotated[Side | None, Blank] = Field(
        default=None,
        description="Height when the member gives none, like `default_width`.",
        json_schema_extra={"unset": "the model's native size", "example": 512},
    )
    default_cfg: Annotated[
        Float, AfterValidator(Check("at most 2 decimals", _two_decimals, "must have at most 2 decimals"))
    ] = Field(default=7.5, ge=0, le=MAX_CFG, description="CFG scale by default.")
    default_sampler: Annotated[Str, one_of(SAMPLERS)] = Field(
        default="k_euler_a", description="Sampler by default."
    )
    default_n: Int = Field(default=1, ge=MIN_N, le=MAX_N, description="Images per request by default.")
    default_karras: Bool = Field(default=True, description="Karras scheduling by default.")
    default_strength: Float = Field(
        default=0.6,
        ge=MIN_STRENGTH,
        le=MAX_STRENGTH,
        description="img2img denoising strength when an image is attached without `strength`.",
    )
    max_n: Int = Field(
        default=4, ge=MIN_N, le=MAX_N, description="Most images per request (a server's `max-n` replaces it)."
    )
    max_steps: Int = Field(
        default=50, ge=MIN_STEPS, le=MAX_STEPS, description="Most steps (a server's `max-steps` replaces it)."
    )
    max_pixels: Int = Field(
        default=1024 * 1024,
        ge=MIN_PIXELS,
        le=MAX_PIXELS,
        description="Largest width × height (a server's `max-pixels` replaces it). Above about 1024×1024 "
        "or 50 steps the Horde wants the kudos upfront, which the anonymous key never has.",
    )
    catalog_refresh_seconds: Float = Field(
        default=300.0,
        ge=10,
        description="How often the model list (workers, queue) and the style list are fetched again.",
    )
    catalog_retry_seconds: Float = Field(
        default=30.0,
        gt=0,
        description="After a failed fetch, how long the last good copy is served before asking again.",
    )
    reference_refresh_seconds: Float = Field(
        default=3600.0,
        ge=60,
        description="How often the image model reference ([`horde.model_reference_url`](#horde)) is fetched "
        "again.",
    )
    autocomplete_timeout_seconds: Float = Field(
        default=2.0,
        gt=0,
        le=2.5,
        description="Longest wait of the model/style autocomplete, in seconds (Discord allows 3 and it can't "
        "be deferred).",
    )
    style_pages: Int = Field(
        default=1,
        ge=1,
        le=10,
        description="Pages of 25 public styles (most used first) offered in the style autocomplete.",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class GenerationSettings(Section, section="generation_jobs"):
    """`/generate` jobs: limits checked before the Horde is called, and how the bot polls it."""

    cooldown_seconds: Float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds a member waits between two generations; a server's own cooldown (`/config`) "
        "wins. On SQLite kept in memory (a restart forgets it); with several bot processes on one "
        "database it runs from the member's newest generation in any of them.",
    )
    max_per_user: Int = Field(
        default=3,
        ge=1,
        le=100,
        description="Generations in progress at once per member; one still being checked, waiting to be "
        "sent or being sent counts too, so simultaneous `/generate` can't exceed it. With several bot "
        "processes on one database, the member's generations in every process count, also for commands "
        "reaching two processes at the same instant. A member is refused "
        "only for these limits and the cooldown, never for the bot's own pace: past the Horde's 2 requests "
        'a second, a request waits in line and its progress message shows "Waiting to be sent to the AI '
        'Horde (position N)" (Cancel works there, and nothing is sent).',
    )
    max_per_guild: Int = Field(
        default=25,
        ge=1,
        le=10000,
        description="Generations in progress at once per server (in every process sharing the database).",
    )
    # /generate/check allows 10/s per request id; all of the bot shares one IP: stay polite.
    checks_per_second: Float = Field(
        default=20.0,
        ge=0.1,
        le=50,
        description="Bot-wide budget of `GET /generate/check` calls per second: every member shares the "
        "bot's one IP.",
    )
    min_interval: Float = Field(default=2.0, ge=1, le=60, description="Fastest check of one job, in seconds.")
    max_interval: Float = Field(
        default=30.0,
        le=300,
        description="Slowest check of one job, in seconds (at least `min_interval`); in between it follows "
        "the Horde's `wait_time` and queue position. A job a worker has taken is checked every "
        "`min_interval`.",
    )
    progress_interval: Float = Field(
        default=5.0, ge=1, le=300, description="At most one progress edit per job this often, in seconds."
    )
    impossible_timeout: Float = Field(
        default=600.0,
        ge=30,
        le=3600,
        description="Cancel and fail a request no worker can serve for this long, in seconds.",
    )
    max_upload_bytes: Int = Field(
        default=DEFAULT_UPLOAD_BYTES,
        ge=1024,
        le=50 * MIB,
        description="Largest `image` attachment (img2img or Remix source), in bytes.",
    )
    max_result_bytes: Int = Field(
        default=20 * MIB, ge=1024, le=100 * MIB, description="Largest downloaded result image, in bytes."
    )
    backoff_factor: Float = Field(
        default=1.5,
        ge=1,
        le=4,
        description="While checks return the same state and no worker has the job, each wait is this many "
        "times longer; any change starts again from the Horde's estimate.",
    )
    backoff_max: Float = Field(
        default=10.0,
        le=300,
        description="Longest wait the back-off grows to, in seconds (at least `min_interval`): a request "
        "stuck in the queue is checked at most once per 10 s by default.",
    )
    stuck_notice_after: Float = Field(
        default=60.0,
        ge=10,
        le=3600,
        description="Seconds with no worker on a request before the member is told so, with the models whose "
        "workers are free right now. The progress message shows the time waited throughout.",
    )
    outage_after: Int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed checks in a row (5xx, timeouts, refused connections) before the progress "
        "message says the Horde isn't answering and the request is safe; it returns to normal progress "
        "when the Horde answers.",
    )

    @model_validator(mode="after")
    def _intervals_are_ordered(self) -> GenerationSettings:
        for key in ("max_interval", "backoff_max"):
            value = getattr(self, key)
            if value < self.min_interval:
                raise KeyProblem(
                    key, f"must be between min_interval ({self.min_interval}) and 300 seconds (got {value})"
                )
        return self


@dataclass(frozen=True, config=SECTION_CONFIG)
class RolesSettings(Section, section="roles"):
    """Automated roles; the rules are set per server with `/config roles`."""

    interval: Float = Field(
        default=3600.0,
        ge=60,
        description="Seconds from the start of one full sync to the start of the next.",
    )
    calls_per_minute: Float = Field(
        default=60.0,
        gt=0,
        description='Horde calls (public `GET /v2/users/{id}`, plus worker look-ups for the "online '
        'only" rule) the sync may make per minute, spread evenly. 10,000 members at 60 a minute take '
        "about 3 hours per pass.",
    )
    batch_size: Int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Linked members read from the database at a time: memory stays bounded at any size.",
    )
    step_seconds: Float = Field(
        default=5.0, gt=0, description="How often the sync wakes up to work through the next page of members."
    )
    problem_retry_seconds: Float = Field(
        default=3600.0,
        ge=0,
        description="A role the bot could not manage is retried after this many seconds; the log channel is "
        "told only once.",
    )
    members_intent: Bool = Field(
        default=False,
        description="Set to `true` only if the privileged **Server Members** intent is enabled for the bot "
        "in the developer portal: the bot then knows who is in each server without asking Discord member "
        "by member.",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class SafetySettings(Section, section="safety"):
    """Prompt safety, NSFW rules and rate limits ([docs/features/safety.md](docs/features/safety.md)). The
    built-in filter can't be turned off; servers add their own blocked words with `/config blocked-words`."""

    # Strikes are "in a row" while each comes less than `strike_window` seconds after the previous cooldown.
    cooldown_steps: Annotated[tuple[Seconds, ...], Field(min_length=1)] = Field(
        default=(0, 300, 1800, 86400),
        description="Pause in seconds after the 1st, 2nd, 3rd... refused prompt in a row (the last step "
        "repeats).",
    )
    strike_window: Int = Field(
        default=86400,
        ge=60,
        description='Refusals count as "in a row" while each comes within this many seconds of the previous '
        "pause's end.",
    )
    incident_cooldown: Int = Field(
        default=1800,
        ge=0,
        description="A prompt the Horde itself rejects (`CorruptPrompt`, `TimeoutIP`) pauses the member at "
        "least this long, in seconds.",
    )
    review_file: Annotated[Str, Field(min_length=1), Stripped] = Field(
        default="data/safety_review.txt",
        description="Each Horde rejection is appended here as one JSON line (time, rc, prompt, negative; "
        "no user id), for improving the filter.",
    )
    allow_nsfw_in_dms: Bool = Field(
        default=False, description="Whether NSFW generations are allowed in direct messages."
    )
    ip_timeout_steps: Annotated[tuple[Annotated[Int, Field(gt=0)], ...], Field(min_length=1)] = Field(
        default=(180, 540, 900),
        description="Bot-wide pause in seconds after the 1st, 2nd, 3rd... Horde IP timeout within "
        "`ip_timeout_window`, when the Horde doesn't say how long (the Horde itself uses 3, 9, 15 minutes).",
    )
    ip_timeout_window: Int = Field(
        default=86400,
        ge=60,
        description="How long IP timeouts are remembered for the steps above, in seconds.",
    )
    # Token buckets for commands that call the Horde: `*_per_minute` refill, `*_burst` capacity.
    user_per_minute: Float = Field(
        default=10.0, gt=0, description="⏱ commands: each member's requests refill at this rate."
    )
    user_burst: Int = Field(default=5, ge=1, description="⏱ commands: requests one member may send at once.")
    guild_per_minute: Float = Field(
        default=60.0, gt=0, description="⏱ commands: each server's requests refill at this rate."
    )
    guild_burst: Int = Field(
        default=30, ge=1, description="⏱ commands: requests one server may send at once."
    )
    image_check_timeout: Float = Field(
        default=120.0,
        ge=10,
        le=900,
        description="Seconds a member waits for the alchemy NSFW check of an image (server setting "
        "`alchemy-nsfw-check`).",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class KudosSettings(Section, section="kudos"):
    """Kudos gifting by emoji reactions and `/transfer`, and generation parties
    ([docs/features/kudos.md](docs/features/kudos.md)); emojis and amounts are set per server with
    `/config kudos-emoji`."""

    pending_days: Float = Field(
        default=7.0,
        gt=0,
        description="Days a gift waits for a receiver who hasn't linked an AI Horde account; after that it "
        "lapses and the giver is told.",
    )
    reactor_notice_hours: Float = Field(
        default=24.0,
        ge=0,
        description="An unlinked member who reacts is told to `/login` at most once per this many hours.",
    )
    error_notice_hours: Float = Field(
        default=24.0,
        ge=0,
        description="The same failure or delay is explained to a giver at most once per this many hours.",
    )
    transfer_interval: Float = Field(
        default=1.0,
        ge=1,
        description="Seconds between two transfers from one giver (the Horde's limit per key is 1 a second).",
    )
    retry_base: Float = Field(
        default=5.0,
        gt=0,
        description="First retry delay after a rate limit or an outage, in seconds; it doubles each time.",
    )
    retry_cap: Float = Field(default=600.0, gt=0, description="Longest retry delay, in seconds.")
    reciprocal_wait: Float = Field(
        default=61.0,
        ge=0,
        description="A gift back to someone who sent the giver kudos in the last minute is held this many "
        "seconds after that transfer (the Horde refuses it with `TooFastKudosTransfers` for 60 s); a "
        "refusal anyway (a transfer made outside the bot) is retried after this.",
    )
    check_interval: Float = Field(
        default=5.0,
        gt=0,
        description="How often queued retries, lapsed gifts and party end times are checked, in seconds (a "
        "process alone on its SQLite database reads the gifts only while one may be due).",
    )
    max_parallel: Int = Field(
        default=20, ge=1, description="Transfers in flight at once (each from a different giver)."
    )
    confirm_reaction: Str = Field(
        default="✅", description='The bot\'s reaction on a message once a gift on it is sent (`""`: none).'
    )
    transfer_max: Int = Field(default=100_000, ge=1, description="Largest `/transfer` amount.")
    transfer_confirm_seconds: Float = Field(
        default=60.0, gt=0, description="Life of the `/transfer` confirm button, in seconds."
    )
    transfer_wait_seconds: Float = Field(
        default=10.0, ge=0, description='How long `/transfer` waits to report "sent" before saying "queued".'
    )
    history_limit: Int = Field(default=10, ge=1, le=25, description="Gifts per list in `/kudos history`.")
    party_max_hours: Float = Field(default=72.0, gt=0, description="Longest generation party, in hours.")
    party_max_award: Int = Field(default=1_000, ge=1, description="Largest party award per generation.")


MAX_DAYS = 36500


def _days(default: int, what: str) -> Any:
    return Field(default=default, ge=0, le=MAX_DAYS, description=what)


@dataclass(frozen=True, config=SECTION_CONFIG)
class RetentionSettings(Section, section="retention"):
    """How long each kind of row is kept, in days (`0`: forever); see [Data kept and for how
    long](#data-kept-and-for-how-long). A scheduled prune deletes the rest in small batches; rows still in use
    are never deleted."""

    finished_jobs: Int = _days(
        30,
        "Finished image, alchemy and text jobs (prompts, results, errors). Jobs in flight are never deleted.",
    )
    chat: Int = _days(30, "`/chat` turns, and conversations left without any.")
    ratings: Int = _days(
        30, "Delivered (or failed) ratings, and served images nobody rated any more. Open ratings stay."
    )
    rating_images: Int = _days(
        30,
        "Served images nobody rated (`/rate`, `/rate-party`; their ratings and figures follow `ratings`), "
        "or sooner when `ratings` is shorter. Formerly `[ratings] keep_days`, still read from there.",
    )
    kudos_ledger: Int = _days(
        365,
        "Sent, failed and lapsed kudos gifts (the audit trail; `0` keeps it for good). Queued and pending "
        "gifts stay.",
    )
    parties: Int = _days(30, "Ended generation parties.")
    notices: Int = _days(365, "When a member was last sent a DM notice.")
    safety_incidents: Int = _days(
        90, "Refused-prompt strikes (never while their cooldown runs) and the Horde's IP timeouts."
    )
    worker_seen: Int = _days(7, "When a member's worker was last seen online (automated roles).")
    img2img_sources: Int = Field(
        default=3,
        ge=1,
        le=MAX_DAYS,
        description="Days an img2img source image is kept after its last use, for Regenerate.",
    )
    img2img_sources_max_mib: Int = Field(
        default=256,
        ge=1,
        le=1024 * 1024,
        description="All source images together, in MiB; the least recently used go first.",
    )
    interval_minutes: Float = Field(default=60.0, ge=1, le=1440, description="How often the prune runs.")
    batch_size: Int = Field(
        default=200, ge=10, le=10000, description="Rows deleted per batch, one short transaction each."
    )
    batch_pause_seconds: Float = Field(
        default=0.05,
        ge=0,
        le=10,
        description="Pause between two batches, so the bot's own writes go first.",
    )

    @property
    def img2img_sources_max_bytes(self) -> int:
        return self.img2img_sources_max_mib * MIB

    def days(self, kind: str) -> int:
        return int(getattr(self, kind))


# --- the whole file ----------------------------------------------------------------------------------------

# Every [section] config.toml may hold, in the order of the reference and of config.example.toml.
SECTIONS: tuple[type[Section], ...] = (
    DiscordSettings,
    HordeSettings,
    DatabaseSettings,
    SecuritySettings,
    SchedulerSettings,
    ImageSettings,
    LoggingSettings,
    InfoSettings,
    AlchemySettings,
    TextSettings,
    RatingsSettings,
    AdminSettings,
    GenerationDefaults,
    GenerationSettings,
    CivitaiSettings,
    PacerSettings,
    RolesSettings,
    SafetySettings,
    KudosSettings,
    RetentionSettings,
)


@dataclass(frozen=True, config=SECTION_CONFIG)
class Settings:
    """All of config.toml, each section typed; `raw` keeps the file as read."""

    discord: DiscordSettings
    security: SecuritySettings
    horde: HordeSettings = Field(default_factory=HordeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    info: InfoSettings = Field(default_factory=InfoSettings)
    alchemy: AlchemySettings = Field(default_factory=AlchemySettings)
    text: TextSettings = Field(default_factory=TextSettings)
    ratings: RatingsSettings = Field(default_factory=RatingsSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    generation_jobs: GenerationSettings = Field(default_factory=GenerationSettings)
    civitai: CivitaiSettings = Field(default_factory=CivitaiSettings)
    horde_pacer: PacerSettings = Field(default_factory=PacerSettings)
    roles: RolesSettings = Field(default_factory=RolesSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    kudos: KudosSettings = Field(default_factory=KudosSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    raw: Mapping[str, Any] = Field(default_factory=dict)
    # Keys the file still has under their old names (`MOVED_KEYS`): one line each for the log at start.
    moved_keys: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _sections_from_raw(cls, data: Any) -> Any:
        """`Settings(discord=..., security=..., raw={"kudos": {...}})`: a section not given is read from
        `raw`."""
        args: tuple[Any, ...] = ()
        if isinstance(data, ArgsKwargs):
            args, data = data.args, dict(data.kwargs or {})
        if not isinstance(data, dict):
            return data
        raw = data.get("raw") or {}
        if isinstance(raw, Mapping):
            for model in SECTIONS:
                if model.name not in data and model.name in raw:
                    data[model.name] = model.from_section(raw[model.name])
        return ArgsKwargs(args, data) if args else data

    @property
    def log_level(self) -> str:
        return self.logging.level

    def section(self, name: str) -> Mapping[str, Any]:
        """The section as written in the file ({} when left out)."""
        value = self.raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(name, "must be a table")
        return value


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
                f"is not valid: {which} is not a valid Fernet key (44 url-safe base64 characters; several "
                "keys are separated by commas, newest first)",
                "environment",
            ) from None
    return ",".join(keys), generated


# Keys that moved, (old section, old key) -> (new section, new key). The old name still works: a self-hoster's
# config.toml (copied from an older config.example.toml, which lists every key) keeps starting the bot with
# the same effect, and the log says where the key lives now. Set in both places to different values, it is
# refused: which one was meant can't be told.
MOVED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("ratings", "keep_days"): ("retention", "rating_images"),
}


def _move_old_keys(tables: dict[str, dict[str, Any]], source: str) -> tuple[str, ...]:
    """Each old key of `MOVED_KEYS` found in the file, moved to its new place; returns a notice for each."""
    notices = []
    for (old_section, old_key), (section, key) in MOVED_KEYS.items():
        if old_key not in tables.get(old_section, {}):
            continue
        value = tables[old_section].pop(old_key)
        new = tables.setdefault(section, {})
        if key in new and new[key] != value:
            raise ConfigError(
                f"{old_section}.{old_key}",
                f"is now {section}.{key}, which is set too, to {new[key]!r}: keep only {section}.{key}",
                source,
            )
        new[key] = value
        notices.append(f"{source}: {old_section}.{old_key} is now {section}.{key} (read from the old place)")
    return tuple(notices)


def load_settings(
    config_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read `config_path` and secrets from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    path = Path(config_path)
    source = str(config_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", "file not found (copy config.example.toml to config.toml)", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", source) from None
    tables: dict[str, Any] = {}
    known = [model.name for model in SECTIONS]
    for name, value in data.items():
        if name not in known:
            raise unknown_section(name, known, source)
        if not isinstance(value, dict):
            raise not_a_table(name, source)
        tables[name] = dict(value)
    moved = _move_old_keys(tables, source)
    for model in SECTIONS:
        for key, info in fields_of(model).items():
            if not in_file(info) and key in tables.get(model.name, {}):
                raise ConfigError(
                    f"{model.name}.{key}",
                    "can't be set in this file: secrets come from DISCORD_TOKEN and HORDEBOT_SECRET_KEY in "
                    "the environment or in .env",
                    source,
                )
    token = env.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise ConfigError("DISCORD_TOKEN", "is missing: set it in the environment or in .env", "environment")
    tables["discord"] = {**tables.get("discord", {}), "token": token}
    # The secret key is read once the file's [security] section is known to be valid.
    tables["security"] = {**tables.get("security", {}), "secret_key": ""}
    settings = _validated({**tables, "raw": data, "moved_keys": moved}, source)
    secret, generated = _load_secret_key(env, Path(settings.security.secret_key_file))
    security = replace(settings.security, secret_key=secret, secret_key_generated=generated)
    return replace(settings, security=security)


def _validated(data: dict[str, Any], source: str) -> Settings:
    try:
        return TypeAdapter(Settings).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, Settings, "", source) from None
