"""Alchemy: captions (alt text), tags, NSFW checks, upscaling and face fixing on the AI Horde.

Flow: validate the upload (`prepare_image`) -> pick the key (`SharedKeyService.resolve`) -> store a job row
-> `POST /interrogate/async` -> poll `GET /interrogate/status/{id}` through `JobPoller` -> download any
result image -> hand an `AlchemyOutcome` to the delivery hook the Discord layer registered.

Jobs survive restarts: `resume()` picks up every waiting row. The Horde request id is kept in the database
only (it is a capability); members and buttons only ever see our row id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel

from bot.clock import Clock
from bot.config import AlchemySettings
from bot.db.alchemy_text_jobs import JobRecord, JobRepository
from bot.hooks import Hook
from bot.horde import alchemy as forms
from bot.horde.alchemy import InterrogationFormRequest, InterrogationRequest, InterrogationStatus, Tag
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.scheduler import Scheduler
from bot.services import validation
from bot.services.horde_jobs import JobPoller, OutageWatch
from bot.services.images import prepare_image_off_loop
from bot.services.sharedkeys import SharedKeyService

log = logging.getLogger(__name__)

Action = Literal["describe", "upscale", "facefix", "nsfwcheck", "strip_background"]
KIND = "alchemy"
REQUEST_LIFETIME = 20 * 60  # the Horde deletes an interrogation 20 min after creation (API_NOTES §6)


class AlchemyPayload(BaseModel):
    """What a job row keeps about the request (no image, no key)."""

    action: Action
    forms: list[str]
    public: bool = False
    filename: str = "image"


@dataclass
class AlchemyOutcome:
    """The end of a job, for the Discord layer to show."""

    job_id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    action: Action
    public: bool
    filename: str
    caption: str | None = None
    tags: list[Tag] = field(default_factory=list)
    nsfw: bool | None = None
    image: bytes | None = None
    image_form: str | None = None
    image_url: str | None = None  # set instead of `image` when the file is too large to attach
    failed_forms: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


DeliverFn = Callable[[AlchemyOutcome], Awaitable[None]]

FORM_LABELS = {forms.CAPTION: "caption", forms.INTERROGATION: "tags", forms.NSFW: "NSFW check"}


def form_label(name: str) -> str:
    return FORM_LABELS.get(name, name)


class AlchemyService:
    def __init__(
        self,
        jobs: JobRepository,
        horde: HordeClient,
        keys: SharedKeyService,
        scheduler: Scheduler,
        clock: Clock,
        settings: AlchemySettings,
        *,
        tick: float = 1.0,
    ) -> None:
        self._jobs = jobs
        self._horde = horde
        self._keys = keys
        self._clock = clock
        self.settings = settings
        self.outage = OutageWatch(KIND, settings.outage_after)  # Discord layer sets `outage.notify`
        self.poller = JobPoller("alchemy", scheduler, clock, self._poll, tick=tick)
        # Set by the Discord layer; called once per finished job (also for jobs resumed after a restart).
        self.deliver: DeliverFn | None = None
        # Told when the Horde says it has timed out the bot's IP, with its Retry-After (the factory
        # subscribes `SafetyService.note_ip_timeout`).
        self.on_ip_timeout: Hook[[float | None], None] = Hook("alchemy.on_ip_timeout")

    # --- submitting -----------------------------------------------------------------------------------

    def forms_for(
        self, action: Action, *, tags: bool = False, upscaler: str | None = None, fixer: str | None = None
    ) -> list[str]:
        if action == "describe":
            return [forms.CAPTION, forms.INTERROGATION] if tags else [forms.CAPTION]
        if action == "nsfwcheck":
            return [forms.NSFW]
        if action == "strip_background":
            return [forms.STRIP_BACKGROUND]
        if action == "upscale":
            # Left out: the default. Given (even empty): one of the list, or refused without echoing it.
            if upscaler is None:
                return [self.settings.default_upscaler]
            return [validation.choice(upscaler, "upscaler", forms.UPSCALERS)]
        if fixer is None:
            return [self.settings.default_facefixer]
        return [validation.choice(fixer, "fixer", forms.FACE_FIXERS)]

    async def submit(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        image: bytes,
        filename: str,
        action: Action,
        public: bool = False,
        tags: bool = False,
        upscaler: str | None = None,
        fixer: str | None = None,
    ) -> int:
        """Validate and send; returns our job id. Raises a UserFacingError for bad input."""
        wanted = self.forms_for(action, tags=tags, upscaler=upscaler, fixer=fixer)
        prepared = await prepare_image_off_loop(
            image, max_bytes=self.settings.max_upload_bytes, max_side=self.settings.max_side
        )
        resolved = await self._keys.resolve(user_id, guild_id)
        payload = AlchemyPayload(action=action, forms=wanted, public=public, filename=filename[:100])
        now = self._clock.now()
        record = await self._jobs.create(
            kind=KIND,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            payload=payload.model_dump(),
            key_source=resolved.source,
            now=now,
            deadline_at=now + timedelta(seconds=REQUEST_LIFETIME),
        )
        request = InterrogationRequest(
            source_image=prepared.as_base64(),
            forms=[InterrogationFormRequest(name=name) for name in wanted],
            slow_workers=self.settings.slow_workers,
        )
        try:
            accepted = await self._horde.interrogate(request, resolved.key)
        except HordeError as exc:
            await self._jobs.finish(record.id, "failed", self._clock.now(), error=exc.message)
            await self._ip_timeout(exc)
            await self._keys.handle_horde_error(exc, resolved, guild_id)
            raise
        sent = self._clock.now()
        await self._jobs.submitted(
            record.id, accepted.id, sent, sent + timedelta(seconds=REQUEST_LIFETIME + 60)
        )
        self.poller.track(record.id, self.settings.poll_interval)
        log.info("alchemy job %s (%s) submitted for member %s", record.id, action, user_id)
        return record.id

    async def _ip_timeout(self, exc: HordeError) -> None:
        if exc.rc == "TimeoutIP":
            await self.on_ip_timeout.emit(exc.retry_after)

    # --- polling --------------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Pick up the jobs of the previous run. Returns how many are being polled again."""
        resumed = 0
        for record in await self._jobs.active([KIND]):
            if record.horde_id is None:
                # Stopped between storing the row and the Horde's answer: nothing to poll.
                await self._fail(record, "The bot restarted while sending this request. Please try again.")
                continue
            self.poller.track(record.id, 0)
            resumed += 1
        self.poller.start()
        return resumed

    def start(self) -> None:
        self.poller.start()

    async def classify_nsfw(
        self, user_id: int, guild_id: int | None, image: bytes, wait_seconds: float
    ) -> bool | None:
        """The `nsfw` form's verdict on an image, waited for inline (None: no answer within `wait_seconds`).

        For checks *before* an image is used (`SafetyService.check_image_safe`: `/describe` inputs, img2img
        sources), so it is not a stored job: a restart simply drops the check, and the member retries.
        """
        prepared = await prepare_image_off_loop(
            image, max_bytes=self.settings.max_upload_bytes, max_side=self.settings.max_side
        )
        resolved = await self._keys.resolve(user_id, guild_id)
        request = InterrogationRequest(
            source_image=prepared.as_base64(),
            forms=[InterrogationFormRequest(name=forms.NSFW)],
            slow_workers=self.settings.slow_workers,
        )
        try:
            accepted = await self._horde.interrogate(request, resolved.key)
        except HordeError as exc:
            await self._ip_timeout(exc)
            await self._keys.handle_horde_error(exc, resolved, guild_id)
            raise
        deadline = self._clock.monotonic() + wait_seconds
        while self._clock.monotonic() < deadline:
            await self._clock.sleep(self.settings.poll_interval)
            try:
                status = await self._horde.interrogation_status(accepted.id)
            except HordeError as exc:
                if exc.is_rate_limit or isinstance(exc, HordeUnavailable):
                    continue
                raise
            if status.finished:
                for form in status.forms:
                    if form.form == forms.NSFW and form.state == "done" and form.result is not None:
                        value = form.result.get("nsfw")
                        return value if isinstance(value, bool) else None
                return None
        try:
            await self._horde.cancel_interrogation(accepted.id)
        except HordeError:
            log.info("cancelling an unanswered NSFW check failed")
        return None

    async def _poll(self, job_id: int) -> float | None:
        record = await self._jobs.get(job_id)
        if record is None or record.state != "waiting" or record.horde_id is None:
            return None
        try:
            status = await self._horde.interrogation_status(record.horde_id)
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                await self._fail(
                    record,
                    "The AI Horde dropped this request: no worker finished it within 20 minutes. "
                    "Please try again later.",
                    state="expired",
                )
                return None
            if exc.is_rate_limit and exc.retry_after:
                return max(exc.retry_after, self.settings.poll_interval)
            if isinstance(exc, HordeUnavailable):
                # 5xx, timeouts, refused connections: the member hears of it after a few in a row.
                failures = await self.outage.failed(job_id)
                log.info("%s job %s: poll failed (%s); retrying", KIND, job_id, exc.message)
                return float(min(60.0, self.settings.poll_interval * (2 ** min(failures, 4))))
            raise
        await self.outage.answered(job_id)
        if status.finished:
            await self._complete(record, status)
            return None
        if self._clock.now() >= record.deadline_at:
            try:
                await self._horde.cancel_interrogation(record.horde_id)
            except HordeError:
                log.info("alchemy job %s: cancelling the expired request failed", job_id)
            await self._fail(
                record,
                "No worker finished this in time (the AI Horde gives up after 20 minutes). "
                "Please try again later.",
                state="expired",
            )
            return None
        return self.settings.poll_interval

    async def _complete(self, record: JobRecord, status: InterrogationStatus) -> None:
        payload = AlchemyPayload.model_validate(record.payload)
        outcome = self._outcome(record, payload)
        for form in status.forms:
            if form.state != "done" or form.result is None:
                outcome.failed_forms.append(form.form)
                continue
            await self._read_result(outcome, form.form, form.result)
        if outcome.failed_forms and len(outcome.failed_forms) == len(payload.forms):
            names = ", ".join(form_label(f) for f in outcome.failed_forms)
            outcome.error = (
                f"The AI Horde's workers could not finish the {names} (each worker has 3 minutes once it "
                "takes a job; after repeated timeouts or failures the job is given up). Please try again."
            )
        await self._jobs.finish(
            record.id,
            "done" if outcome.ok else "failed",
            self._clock.now(),
            result=_summary(outcome),
            error=outcome.error,
        )
        if record.key_source == "guild" and record.guild_id is not None:
            await self._keys.after_guild_request(record.guild_id)
        await self._deliver(outcome)

    async def _read_result(self, outcome: AlchemyOutcome, name: str, result: dict[str, Any]) -> None:
        if name == forms.CAPTION:
            caption = result.get("caption")
            outcome.caption = caption.strip() if isinstance(caption, str) else None
        elif name == forms.NSFW:
            value = result.get("nsfw")
            outcome.nsfw = bool(value) if isinstance(value, bool) else None
        elif name == forms.INTERROGATION:
            outcome.tags = _tags(result.get("interrogation"))
        elif name in forms.IMAGE_FORMS:
            url = result.get(name)
            if not isinstance(url, str):
                outcome.failed_forms.append(name)
                return
            outcome.image_form = name
            try:
                outcome.image = await self._horde.download(url, max_bytes=self.settings.max_result_bytes)
            except HordeUnavailable as exc:
                if "larger" in exc.message:
                    outcome.image_url = url
                else:
                    outcome.failed_forms.append(name)

    def _outcome(self, record: JobRecord, payload: AlchemyPayload) -> AlchemyOutcome:
        return AlchemyOutcome(
            job_id=record.id,
            user_id=record.user_id,
            guild_id=record.guild_id,
            channel_id=record.channel_id,
            action=payload.action,
            public=payload.public,
            filename=payload.filename,
        )

    async def _fail(self, record: JobRecord, message: str, *, state: str = "failed") -> None:
        self.outage.forget(record.id)
        await self._jobs.finish(record.id, state, self._clock.now(), error=message)
        outcome = self._outcome(record, AlchemyPayload.model_validate(record.payload))
        outcome.error = message
        await self._deliver(outcome)

    async def _deliver(self, outcome: AlchemyOutcome) -> None:
        if self.deliver is None:
            log.warning("alchemy job %s finished but nothing delivers results", outcome.job_id)
            return
        await self.deliver(outcome)


def _tags(raw: Any) -> list[Tag]:
    """Every tag group (tags, artists, flavors...) merged, most confident first."""
    found: list[Tag] = []
    if isinstance(raw, dict):
        for group in raw.values():
            if isinstance(group, list):
                for item in group:
                    if isinstance(item, dict) and isinstance(item.get("text"), str):
                        try:
                            found.append(Tag.model_validate(item))
                        except ValueError:
                            continue
    return sorted(found, key=lambda t: -t.confidence)


def _summary(outcome: AlchemyOutcome) -> dict[str, Any]:
    return {
        "caption": outcome.caption,
        "tags": [t.model_dump() for t in outcome.tags[:50]],
        "nsfw": outcome.nsfw,
        "image_form": outcome.image_form,
        "failed_forms": outcome.failed_forms,
    }
