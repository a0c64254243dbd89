"""Typed shapes of the Horde's public information: models, workers, teams, news, stats, status
(API_NOTES §8) and shared keys (§9)."""

from __future__ import annotations

from pydantic import Field

from bot.horde.limits import (
    MAX_SHARED_KEY_KUDOS,
    MAX_SHARED_KEY_NAME,
    MAX_SHARED_KEY_PIXELS,
    MAX_SHARED_KEY_STEPS,
    MAX_SHARED_KEY_TOKENS,
    MIN_SHARED_KEY_NAME,
)
from bot.horde.models import HordeRequest, HordeResponse


class ActiveModel(HordeResponse):
    """One entry of `GET /status/models`: only models with at least one active worker are listed."""

    name: str
    count: int = 0
    performance: float = 0
    queued: float = 0
    jobs: float = 0
    eta: int = 0
    type: str = "image"


class TeamLite(HordeResponse):
    id: str | None = None
    name: str | None = None


class WorkerLite(HordeResponse):
    id: str
    name: str = ""
    type: str = "image"
    online: bool = False


class Worker(WorkerLite):
    """`WorkerDetails` (public view: `owner` and `contact` only when privileged or allowed)."""

    trusted: bool = False
    flagged: bool = False
    maintenance_mode: bool = False
    nsfw: bool = False
    models: list[str] = Field(default_factory=list)
    forms: list[str] = Field(default_factory=list)
    team: TeamLite | None = None
    performance: str = ""
    threads: int = 0
    uptime: int = 0
    requests_fulfilled: int = 0
    kudos_rewards: float = 0
    uncompleted_jobs: int = 0
    max_pixels: int | None = None
    megapixelsteps_generated: float | None = None
    max_length: int | None = None
    max_context_length: int | None = None
    tokens_generated: float | None = None
    info: str | None = None
    owner: str | None = None
    bridge_agent: str = ""


class ActiveModelLite(HordeResponse):
    name: str
    count: int = 0


class Team(HordeResponse):
    id: str
    name: str = ""
    info: str | None = None
    requests_fulfilled: int = 0
    kudos: float = 0
    uptime: int = 0
    creator: str | None = None
    worker_count: int = 0
    workers: list[WorkerLite] = Field(default_factory=list)
    models: list[ActiveModelLite] = Field(default_factory=list)


class Newspiece(HordeResponse):
    date_published: str = ""
    newspiece: str = ""
    importance: str = ""
    title: str | None = None
    tags: list[str] = Field(default_factory=list)
    more_info_urls: list[str] = Field(default_factory=list)


class ImagePeriod(HordeResponse):
    images: int = 0
    ps: int = 0


class TextPeriod(HordeResponse):
    requests: int = 0
    tokens: int = 0


class ImageTotals(HordeResponse):
    minute: ImagePeriod = Field(default_factory=ImagePeriod)
    hour: ImagePeriod = Field(default_factory=ImagePeriod)
    day: ImagePeriod = Field(default_factory=ImagePeriod)
    month: ImagePeriod = Field(default_factory=ImagePeriod)
    total: ImagePeriod = Field(default_factory=ImagePeriod)


class TextTotals(HordeResponse):
    minute: TextPeriod = Field(default_factory=TextPeriod)
    hour: TextPeriod = Field(default_factory=TextPeriod)
    day: TextPeriod = Field(default_factory=TextPeriod)
    month: TextPeriod = Field(default_factory=TextPeriod)
    total: TextPeriod = Field(default_factory=TextPeriod)


class Performance(HordeResponse):
    queued_requests: int = 0
    queued_text_requests: int = 0
    worker_count: int = 0
    text_worker_count: int = 0
    thread_count: int = 0
    text_thread_count: int = 0
    queued_megapixelsteps: float = 0
    past_minute_megapixelsteps: float = 0
    queued_forms: float = 0
    interrogator_count: int = 0
    interrogator_thread_count: int = 0
    queued_tokens: float = 0
    past_minute_tokens: float = 0


class Modes(HordeResponse):
    maintenance_mode: bool = False
    invite_only_mode: bool = False


class Heartbeat(HordeResponse):
    message: str = ""
    version: str = ""


class SharedKeyInput(HordeRequest):
    """`PUT`/`PATCH /sharedkeys` body; -1 means unlimited (or never expires)."""

    name: str = Field(min_length=MIN_SHARED_KEY_NAME, max_length=MAX_SHARED_KEY_NAME)
    kudos: int = Field(default=5000, ge=-1, le=MAX_SHARED_KEY_KUDOS)
    expiry: int = Field(default=-1, ge=-1)
    max_image_pixels: int = Field(default=-1, ge=-1, le=MAX_SHARED_KEY_PIXELS)
    max_image_steps: int = Field(default=-1, ge=-1, le=MAX_SHARED_KEY_STEPS)
    max_text_tokens: int = Field(default=-1, ge=-1, le=MAX_SHARED_KEY_TOKENS)


class SharedKeyDetails(HordeResponse):
    """A shared key. `id` IS the key: whoever knows it spends its owner's kudos (so it is kept out of reprs,
    and thereby out of any log line or traceback that shows this model or a dataclass holding it)."""

    id: str = Field(repr=False)
    username: str = ""
    name: str = ""
    kudos: int = 0
    expiry: str | None = None
    utilized: int = 0
    max_image_pixels: int = -1
    max_image_steps: int = -1
    max_text_tokens: int = -1

    @property
    def remaining(self) -> int | None:
        """Kudos still spendable through the key; None when unlimited."""
        if self.kudos == -1:
            return None
        return max(0, self.kudos - self.utilized)
