"""Alchemy: captions (alt text), tags, NSFW checks, upscaling and face fixing on the AI Horde.

Flow: validate the upload (`prepare_image`) -> pick the key (`SharedKeyService.resolve`) -> store a job row
(`queued`) -> the job engine (`bot.services.jobs.engine`: the pacer's line with its position shown,
`POST /interrogate/async`, polls of `GET /interrogate/status/{id}`, outage notices) through `AlchemyJobs`,
this kind's adapter -> download any result image -> hand an `AlchemyOutcome` to the delivery hook the
Discord layer registered.

Jobs survive restarts from any state: `resume()` sends the jobs still in line, in order, and one whose
POST a stop cut off once more (their image is put in the source store before it is first sent, `park`, and
kept there like an img2img source), and polls the rest. The Horde request id is kept in the database
only (it is a capability); members and buttons only ever see our row id.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel

from bot.clock import Clock
from bot.config import AlchemySettings
from bot.db.alchemy_text_jobs import JobRecord, JobRepository
from bot.db.sources import SourceImageStore
from bot.errors import UserFacingError
from bot.hooks import Hook, Port
from bot.horde import alchemy as forms
from bot.horde.alchemy import (
    InterrogationFormRequest,
    InterrogationRequest,
    InterrogationStatus,
    RequestAccepted,
    Tag,
)
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.pacer import Kind
from bot.scheduler import Scheduler
from bot.services import validation
from bot.services.images import ImageWorker
from bot.services.jobs.engine import REQUEST_LIFETIME, Check, Flight
from bot.services.jobs.held import JobOutcome
from bot.services.jobs.replies import ReplyTokens
from bot.services.jobs.stored import StoredJobs, StoredJobService
from bot.services.sharedkeys import ResolvedKey, SharedKeyService

log = logging.getLogger(__name__)

Action = Literal["describe", "upscale", "facefix", "nsfwcheck", "strip_background"]
KIND = "alchemy"


class AlchemyPayload(BaseModel):
    """What a job row keeps about the request (no image, no key)."""

    action: Action
    forms: list[str]
    public: bool = False
    filename: str = "image"


@dataclass
class AlchemyOutcome(JobOutcome[JobRecord]):
    """The end of a job, for the Discord layer to show."""

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
    exception: BaseException | None = None  # the Horde's refusal of a request sent from the line

    @property
    def ok(self) -> bool:
        return self.error is None


DeliverFn = Callable[[AlchemyOutcome], Awaitable[None]]

FORM_LABELS = {forms.CAPTION: "caption", forms.INTERROGATION: "tags", forms.NSFW: "NSFW check"}


def form_label(name: str) -> str:
    return FORM_LABELS.get(name, name)


async def _undelivered(outcome: AlchemyOutcome) -> None:
    log.warning("alchemy job %s finished but nothing delivers results", outcome.job_id)


class AlchemyJobs(StoredJobs[InterrogationRequest]):
    """The `JobAdapter` of alchemy jobs (`bot.services.jobs.engine`)."""

    kind: Kind = "alchemy"
    name = KIND

    def __init__(
        self,
        jobs: JobRepository,
        horde: HordeClient,
        keys: SharedKeyService,
        clock: Clock,
        settings: AlchemySettings,
        sources: SourceImageStore | None,
        replies: ReplyTokens | None = None,
    ) -> None:
        super().__init__(jobs, keys, clock, replies)
        self._horde = horde
        self._sources = sources
        self.settings = settings
        # Plugged in by the Discord layer; called once per finished job (also for jobs resumed after a
        # restart).
        self.deliver: Port[DeliverFn] = Port("alchemy.deliver", _undelivered)
        # Told when the Horde says it has timed out the bot's IP, with its Retry-After (the factory
        # subscribes `SafetyService.note_ip_timeout`).
        self.on_ip_timeout: Hook[[float | None], None] = Hook("alchemy.on_ip_timeout")

    async def pending(self, job: JobRecord, request: InterrogationRequest) -> dict[str, Any]:
        """The image goes to the source store (kept briefly, forgotten at /logout), never in the row."""
        kept: dict[str, Any] = request.model_dump(exclude_none=True, exclude={"source_image"})
        if self._sources is not None and request.source_image:
            image = base64.b64decode(request.source_image)
            kept["source_id"] = await self._sources.put(job.user_id, image, self._clock.now())
        return kept

    async def rebuild(self, job: JobRecord) -> tuple[InterrogationRequest, ResolvedKey]:
        pending = dict(job.payload.get("pending") or {})
        source_id = pending.pop("source_id", None)
        image = None
        if self._sources is not None and isinstance(source_id, int):
            image = await self._sources.get(source_id, self._clock.now())
        if image is None:
            raise UserFacingError("This request could not be sent after a restart. Please try again.")
        request = InterrogationRequest.model_validate(
            {**pending, "source_image": base64.b64encode(image).decode()}
        )
        return request, await self._keys.resolve(job.user_id, job.guild_id)

    async def post(self, request: InterrogationRequest, resolved: ResolvedKey) -> RequestAccepted:
        return await self._horde.interrogate(request, resolved.key, acquired=True)

    async def refused(
        self, job: JobRecord, request: InterrogationRequest, resolved: ResolvedKey, exc: HordeError
    ) -> None:
        await self.ip_timeout(exc)
        await self._keys.handle_horde_error(exc, resolved, job.guild_id)

    async def ip_timeout(self, exc: HordeError) -> None:
        if exc.rc == "TimeoutIP":
            await self.on_ip_timeout.emit(exc.retry_after)

    async def check(self, job: JobRecord) -> Check:
        assert job.horde_id is not None
        status = await self._horde.interrogation_status(job.horde_id)
        return Check(
            done=status.finished,
            processing=sum(1 for f in status.forms if f.state == "processing"),
            finished=sum(1 for f in status.forms if f.state == "done"),
            waiting=sum(1 for f in status.forms if f.state == "waiting"),
            raw=status,
        )

    def estimate(self, check: Check) -> float:
        return self.settings.poll_interval

    async def give_up(self, job: JobRecord, check: Check, flight: Flight) -> tuple[str, str] | None:
        if self.past_deadline(job):
            return (
                "expired",
                "No worker finished this in time (the AI Horde gives up after 20 minutes). "
                "Please try again later.",
            )
        return None

    async def cancel_remote(self, job: JobRecord) -> InterrogationStatus:
        assert job.horde_id is not None
        return await self._horde.cancel_interrogation(job.horde_id)

    async def cancelled(self, job: JobRecord, answer: InterrogationStatus) -> None:
        await self.end(job, "cancelled", "Cancelled.")

    async def complete(self, job: JobRecord, check: Check) -> float | None:
        status: InterrogationStatus = check.raw
        payload = AlchemyPayload.model_validate(job.payload)
        outcome = self._outcome(job, payload)
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
        if not await self.delivering(job):
            return None  # another process took the job over: it delivers
        await self.hand_over(outcome)
        state = "done" if outcome.ok else "failed"
        await self.ended(job, state, result=_summary(outcome), error=outcome.error)
        return None

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
            job=record,
            action=payload.action,
            public=payload.public,
            filename=payload.filename,
            reply=self.reply(record),
        )

    def outcome_of(self, job: JobRecord) -> Any:
        return self._outcome(job, AlchemyPayload.model_validate(job.payload))

    async def hand_over(self, outcome: AlchemyOutcome) -> None:
        await self.deliver.get()(outcome)


class AlchemyService(StoredJobService[InterrogationRequest]):
    def __init__(
        self,
        jobs: JobRepository,
        horde: HordeClient,
        keys: SharedKeyService,
        scheduler: Scheduler,
        clock: Clock,
        settings: AlchemySettings,
        images: ImageWorker,
        *,
        tick: float = 1.0,
        takeovers: Hook[[], object] | None = None,
        sources: SourceImageStore | None = None,
        replies: ReplyTokens | None = None,
    ) -> None:
        self._horde = horde
        self._images = images
        self._keys = keys
        self._clock = clock
        self.settings = settings
        self.adapter = AlchemyJobs(jobs, horde, keys, clock, settings, sources, replies)
        super().__init__(
            self.adapter,
            jobs,
            horde.pacer,
            scheduler,
            clock,
            poll_interval=settings.poll_interval,
            outage_after=settings.outage_after,
            tick=tick,
            takeovers=takeovers,
        )
        # Where the Discord layer plugs in (the cog: in cog_load, out in cog_unload) and the factory
        # subscribes safety (the Horde timed out the bot's IP, with its Retry-After).
        self.deliver: Port[DeliverFn] = self.adapter.deliver
        self.on_ip_timeout: Hook[[float | None], None] = self.adapter.on_ip_timeout

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

    async def prepare(self, image: bytes) -> str:
        """An upload checked and converted once, as an alchemy request carries it (base64 WebP, at most
        `max_side`): what `submit` sends and the safety check (`classify_nsfw`) looks at. Raises
        InvalidInputError saying what is wrong with it."""
        prepared = await self._images.prepare(
            image, max_bytes=self.settings.max_upload_bytes, max_side=self.settings.max_side
        )
        return prepared.as_base64()

    async def submit(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        source_image: str,
        filename: str,
        action: Action,
        public: bool = False,
        tags: bool = False,
        upscaler: str | None = None,
        fixer: str | None = None,
    ) -> int:
        """Validate, store, send (or put in line) an image from `prepare`; returns our job id. Raises a
        UserFacingError for bad input, and the Horde's refusal of a request sent at once."""
        wanted = self.forms_for(action, tags=tags, upscaler=upscaler, fixer=fixer)
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
            source_image=source_image,
            forms=[InterrogationFormRequest(name=name) for name in wanted],
            slow_workers=self.settings.slow_workers,
        )
        await self.engine.start(record, request, resolved)
        return record.id

    async def classify_nsfw(
        self, user_id: int, guild_id: int | None, source_image: str, wait_seconds: float
    ) -> bool | None:
        """The `nsfw` form's verdict on an image, waited for inline (None: no answer within `wait_seconds`).

        For checks *before* an image is used (`SafetyService.check_image_safe`: `/describe` inputs, img2img
        sources), so it is not a stored job: a restart simply drops the check, and the member retries.
        `source_image` is the image as its own request sends it (base64 WebP from `prepare`, or an img2img
        source converted at the request's size), sent as it is: never converted a second time.
        """
        resolved = await self._keys.resolve(user_id, guild_id)
        request = InterrogationRequest(
            source_image=source_image,
            forms=[InterrogationFormRequest(name=forms.NSFW)],
            slow_workers=self.settings.slow_workers,
        )
        try:
            accepted = await self._horde.interrogate(request, resolved.key)
        except HordeError as exc:
            await self.adapter.ip_timeout(exc)
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
