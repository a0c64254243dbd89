"""What image generation's parts share: its settings, what the Discord layer is handed, and texts.

Split out of `bot.services.generation` so the parts (limits, delivery, the service) each import it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config import ConfigError, reader
from bot.db.generation import GenerationJob
from bot.services.generation_options import NEGATIVE_SEPARATOR
from bot.services.images import MAX_UPLOAD_BYTES
from bot.services.jobs.engine import Pace

INCIDENT_CODES = ("CorruptPrompt", "TimeoutIP")
NSFW_NOTICE = (
    "NSFW isn't allowed in this channel, so this was generated with NSFW content censored by the workers."
)
CENSORED_NOTICE = "censored by the worker (its safety filter flagged the image)"
GONE = "This generation is no longer known to the bot. Use /generate to start a new one."


@dataclass(frozen=True)
class GenerationSettings:
    """`[generation_jobs]` in config.toml: limits and pacing of /generate jobs."""

    cooldown_seconds: float = 10.0  # per member between two /generate (a guild's cooldown_seconds wins)
    max_per_user: int = 3  # jobs in flight per member
    max_per_guild: int = 25  # jobs in flight per guild
    checks_per_second: float = 20.0  # bot-wide budget of GET /generate/check calls
    min_interval: float = 2.0  # fastest poll of one job
    max_interval: float = 30.0  # slowest poll of one job (long queues)
    progress_interval: float = 5.0  # at most one progress edit per job this often
    impossible_timeout: float = 600.0  # give up when no worker can serve the request this long
    max_upload_bytes: int = MAX_UPLOAD_BYTES  # img2img source attachment
    max_result_bytes: int = 20 * 1024 * 1024  # one downloaded image
    backoff_factor: float = 1.5  # each check returning the same state waits this much longer...
    backoff_max: float = 10.0  # ...up to this (a stuck request: at most one check per 10 s)
    stuck_notice_after: float = 60.0  # then the member is told no worker has taken the request yet
    outage_after: int = 3  # failed checks in a row before the member is told the Horde isn't answering

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> GenerationSettings:
        get = reader(section, "generation_jobs")
        d = cls()
        s = cls(
            cooldown_seconds=get("cooldown_seconds", float, d.cooldown_seconds),
            max_per_user=get("max_per_user", int, d.max_per_user),
            max_per_guild=get("max_per_guild", int, d.max_per_guild),
            checks_per_second=get("checks_per_second", float, d.checks_per_second),
            min_interval=get("min_interval", float, d.min_interval),
            max_interval=get("max_interval", float, d.max_interval),
            progress_interval=get("progress_interval", float, d.progress_interval),
            impossible_timeout=get("impossible_timeout", float, d.impossible_timeout),
            max_upload_bytes=get("max_upload_bytes", int, d.max_upload_bytes),
            max_result_bytes=get("max_result_bytes", int, d.max_result_bytes),
            backoff_factor=get("backoff_factor", float, d.backoff_factor),
            backoff_max=get("backoff_max", float, d.backoff_max),
            stuck_notice_after=get("stuck_notice_after", float, d.stuck_notice_after),
            outage_after=get("outage_after", int, d.outage_after),
        )
        checks: list[tuple[str, bool, str]] = [
            ("cooldown_seconds", 0 <= s.cooldown_seconds <= 3600, "must be between 0 and 3600"),
            ("max_per_user", 1 <= s.max_per_user <= 100, "must be between 1 and 100"),
            ("max_per_guild", 1 <= s.max_per_guild <= 10000, "must be between 1 and 10000"),
            # /generate/check allows 10/s per request id; all of the bot shares one IP: stay polite.
            ("checks_per_second", 0.1 <= s.checks_per_second <= 50, "must be between 0.1 and 50"),
            ("min_interval", 1 <= s.min_interval <= 60, "must be between 1 and 60 seconds"),
            ("max_interval", s.min_interval <= s.max_interval <= 300, "must be min_interval..300 seconds"),
            ("progress_interval", 1 <= s.progress_interval <= 300, "must be between 1 and 300 seconds"),
            ("impossible_timeout", 30 <= s.impossible_timeout <= 3600, "must be between 30 and 3600 seconds"),
            ("max_upload_bytes", 1024 <= s.max_upload_bytes <= 50 * 1024 * 1024, "must be 1 KiB..50 MiB"),
            ("max_result_bytes", 1024 <= s.max_result_bytes <= 100 * 1024 * 1024, "must be 1 KiB..100 MiB"),
            ("backoff_factor", 1 <= s.backoff_factor <= 4, "must be between 1 and 4"),
            ("backoff_max", s.min_interval <= s.backoff_max <= 300, "must be min_interval..300 seconds"),
            ("stuck_notice_after", 10 <= s.stuck_notice_after <= 3600, "must be between 10 and 3600 seconds"),
            ("outage_after", 1 <= s.outage_after <= 100, "must be between 1 and 100"),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise ConfigError(f"generation_jobs.{key}", problem)
        return s

    def pace(self) -> Pace:
        """How the job engine polls and shows /generate jobs."""
        return Pace(
            min_interval=self.min_interval,
            max_interval=self.max_interval,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            progress_interval=self.progress_interval,
            stuck_notice_after=self.stuck_notice_after,
            outage_after=self.outage_after,
            checks_per_second=self.checks_per_second,
            max_concurrent=16,
        )


# --- what the Discord layer is handed -------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: int
    kudos: float
    n: int
    notice: str | None
    anonymous: bool
    position: int | None = None  # still waiting to be sent to the Horde: its place in line (1 = next)


@dataclass
class GeneratedImage:
    index: int
    data: bytes | None  # None: censored or could not be fetched
    seed: str
    worker_name: str | None
    model: str | None
    censored: bool = False
    failed: bool = False


@dataclass
class GenerationOutcome:
    job: GenerationJob
    state: str  # done | partial | failed | cancelled | expired
    requested: int
    images: list[GeneratedImage] = field(default_factory=list)
    kudos: float = 0.0
    error: str | None = None  # why it failed (state failed/expired) or what went wrong in part
    rating_id: int | None = None
    exception: BaseException | None = None  # the Horde's refusal of a request sent from the queue

    @property
    def delivered(self) -> list[GeneratedImage]:
        return [image for image in self.images if image.data is not None]

    @property
    def prompt(self) -> str:
        return str(self.job.payload.get("prompt", "")).split(NEGATIVE_SEPARATOR, 1)[0].strip()

    @property
    def params(self) -> dict[str, Any]:
        params = self.job.payload.get("params")
        return dict(params) if isinstance(params, Mapping) else {}


@dataclass(frozen=True)
class CancelResult:
    already_finished: bool
    state: str


def requested(job: GenerationJob) -> int:
    """How many images the job asked for."""
    params = job.payload.get("params")
    n = params.get("n") if isinstance(params, Mapping) else None
    return int(n) if isinstance(n, int) and n > 0 else 1


def source_note(days: int) -> str:
    """What /generate's result says about an img2img source (Regenerate needs it)."""
    return (
        f"Kept {days} day{'s' if days != 1 else ''} after its last use, for "
        "Regenerate. After that, Regenerate asks you to attach the image to /generate again."
    )


def source_gone_text(days: int) -> str:
    return (
        f"The source image of this generation is no longer kept (the bot keeps img2img sources "
        f"{days} day{'s' if days != 1 else ''} after their last use, and within a size limit), so "
        "Regenerate can't repeat it. Run /generate again and attach the image."
    )
