"""What image generation's parts share: its pace, what the Discord layer is handed, and texts.

Split out of `bot.services.generation` so the parts (limits, delivery, the service) each import it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config import GenerationSettings
from bot.db.generation import GenerationJob
from bot.services.generation_options import NEGATIVE_SEPARATOR
from bot.services.jobs.engine import Pace
from bot.services.jobs.held import JobOutcome

INCIDENT_CODES = ("CorruptPrompt", "TimeoutIP")
NSFW_NOTICE = (
    "NSFW isn't allowed in this channel, so this was generated with NSFW content censored by the workers."
)
CENSORED_NOTICE = "censored by the worker (its safety filter flagged the image)"
GONE = "This generation is no longer known to the bot. Use /generate to start a new one."


def image_pace(settings: GenerationSettings) -> Pace:
    """How the job engine polls and shows /generate jobs (`[generation_jobs]`)."""
    return Pace(
        min_interval=settings.min_interval,
        max_interval=settings.max_interval,
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        progress_interval=settings.progress_interval,
        stuck_notice_after=settings.stuck_notice_after,
        outage_after=settings.outage_after,
        checks_per_second=settings.checks_per_second,
        max_concurrent=16,
    )


# --- what the Discord layer is handed -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerationCompleted:
    """An image generation delivered to Discord: what `GenerationService.on_completed` tells its listeners.

    Kudos parties award on it; `message_id` is the bot's result message (gifts on it go to `user_id`).
    """

    job_id: int
    user_id: int
    guild_id: int | None
    channel_id: int
    message_id: int | None
    style: str | None
    model: str | None
    images: int
    anonymous: bool
    prompt: str = ""  # the member's prompt (before any `###` negative): parties check their words in it


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
class GenerationOutcome(JobOutcome[GenerationJob]):
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
