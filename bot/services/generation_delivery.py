"""Image generation's adapter to the job engine: the POST, the check, and the delivery of results.

At `done`, exactly one `GET /generate/status/{id}` (one retry after Retry-After on a 429), then the WebP
files are downloaded (or base64 decoded) into a `GenerationOutcome`; the row is marked `delivering`, a
rating is offered, the Discord layer's `deliver` hook posts it, the row is finished and `on_completed`
subscribers are told. A job found `delivering` (its process stopped while posting) is fetched and
delivered again, and the Discord layer finds the earlier post rather than making a second one.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.config import GenerationSettings
from bot.db.generation import GenerationJob, GenerationJobRepository
from bot.db.sources import SourceImageStore
from bot.errors import UserFacingError
from bot.hooks import Hook, Port
from bot.horde.alchemy import RequestAccepted
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.generation import ImageCheck, ImageRequest, ImageStatus
from bot.horde.pacer import Kind
from bot.services.generation_options import NEGATIVE_SEPARATOR, RequestBuilder
from bot.services.generation_records import (
    INCIDENT_CODES,
    GeneratedImage,
    GenerationCompleted,
    GenerationOutcome,
    requested,
    source_gone_text,
)
from bot.services.jobs.engine import Check, Flight
from bot.services.jobs.held import HeldJobsAdapter
from bot.services.jobs.replies import ReplyTokens
from bot.services.ratings import RatingsService
from bot.services.safety import SafetyService
from bot.services.sharedkeys import ResolvedKey, SharedKeyService

log = logging.getLogger(__name__)

DeliverFn = Callable[[GenerationOutcome], Awaitable[int | None]]
NO_WORKER = (
    "No AI Horde worker can take this request right now (model, size or options nobody serves). "
    "Try another model or smaller settings."
)


def poll_delay(check: Check | ImageCheck, settings: GenerationSettings) -> float:
    """How long until a job's next check: soon when work is under way, later the longer the queue."""
    if check.processing or check.finished:
        # A worker has it: results are fetched within moments of being done.
        return float(settings.min_interval)
    wanted = max(check.wait_time / 4, check.queue_position / 10)
    return float(min(settings.max_interval, max(settings.min_interval, wanted)))


async def _undelivered(outcome: GenerationOutcome) -> int | None:
    log.warning("generation job %s finished but nothing delivers results", outcome.job.id)
    return None


class ImageJobs(HeldJobsAdapter[GenerationJob, GenerationJobRepository]):
    """The `JobAdapter` of /generate jobs (`bot.services.jobs.engine`)."""

    kind: Kind = "image"
    name = "generation"

    def __init__(
        self,
        jobs: GenerationJobRepository,
        horde: HordeClient,
        builder: RequestBuilder,
        keys: SharedKeyService,
        safety: SafetyService,
        ratings: RatingsService | None,
        clock: Clock,
        settings: GenerationSettings,
        *,
        sources: SourceImageStore | None = None,
        source_days: int = 3,
        replies: ReplyTokens | None = None,
    ) -> None:
        super().__init__(jobs, keys, clock, replies)
        self._horde = horde
        self._builder = builder
        self._safety = safety
        self._ratings = ratings
        self.settings = settings
        self._sources = sources
        self.source_days = source_days
        # Plugged in by the Discord layer: posts an outcome and returns the result message id.
        self.deliver: Port[DeliverFn] = Port("generation.deliver", _undelivered)
        # Other features subscribe: told after each delivery (kudos parties award on it).
        self.on_completed: Hook[[GenerationCompleted], object] = Hook("generation.on_completed")

    # --- storage ------------------------------------------------------------------------------------

    async def active(self) -> list[GenerationJob]:
        return await self._jobs.claim_active(self._clock.now())

    async def park(self, job: GenerationJob, request: ImageRequest) -> ImageRequest:
        """Nothing to store: the row holds the request, the source store its img2img source. So the line
        keeps the request without its source (megabytes of base64, for as long as the line lasts), and
        `unpark` reads it back just before the POST."""
        if request.source_image and job.source_id is not None and self._sources is not None:
            return request.model_copy(update={"source_image": None})
        return request

    async def unpark(self, job: GenerationJob, request: ImageRequest) -> ImageRequest:
        return await self.with_source(job, request)

    async def rebuild(self, job: GenerationJob) -> tuple[ImageRequest, ResolvedKey]:
        resolved = await self._keys.resolve(job.user_id, job.guild_id, channel_id=job.channel_id)
        request = await self.with_source(job, ImageRequest.model_validate(job.payload))
        return request, resolved

    async def with_source(self, job: GenerationJob, request: ImageRequest) -> ImageRequest:
        """The request as stored, with its img2img source put back from the source store (the job row
        keeps none). Raises UserFacingError saying so when the source is no longer kept."""
        if request.source_processing and not request.source_image:
            source = None
            if self._sources is not None and job.source_id is not None:
                source = await self._sources.get(job.source_id, self._clock.now())
            if source is None:
                raise UserFacingError(source_gone_text(self.source_days))
            request.source_image = base64.b64encode(source).decode()
        return request

    async def submitted(
        self, job: GenerationJob, request: ImageRequest, accepted: RequestAccepted
    ) -> GenerationJob | None:
        n = request.params.n or 1
        kudos = round(accepted.kudos * n, 2) if accepted.kudos else 0.0
        if not await self._jobs.submitted(job.id, accepted.id, kudos, self._clock.now()):
            return None
        return dataclasses.replace(job, horde_id=accepted.id, kudos=kudos, state="waiting")

    # --- the Horde ----------------------------------------------------------------------------------

    async def post(self, request: ImageRequest, resolved: ResolvedKey) -> RequestAccepted:
        return await self._horde.generate_image(request, resolved.key, acquired=True)

    async def refused(
        self, job: GenerationJob, request: ImageRequest, resolved: ResolvedKey, exc: HordeError
    ) -> None:
        if exc.rc in INCIDENT_CODES:
            positive, _, negative = request.prompt.partition(NEGATIVE_SEPARATOR)
            await self._safety.on_horde_rejection(
                guild_id=job.guild_id,
                user_id=job.user_id,
                prompt=positive,
                negative=negative or None,
                rc=exc.rc or "",
                retry_after=exc.retry_after,
            )
        await self._keys.handle_horde_error(exc, resolved, job.guild_id)

    async def check(self, job: GenerationJob) -> Check:
        assert job.horde_id is not None
        return Check.of(await self._horde.image_check(job.horde_id))

    def estimate(self, check: Check) -> float:
        return poll_delay(check, self.settings)

    async def give_up(self, job: GenerationJob, check: Check, flight: Flight) -> tuple[str, str] | None:
        """No worker can serve it for `impossible_timeout`: cancelled and said so."""
        if check.is_possible:
            flight.trouble_since = None
            return None
        now = self._clock.monotonic()
        if flight.trouble_since is None:
            flight.trouble_since = now
        if now - flight.trouble_since >= self.settings.impossible_timeout:
            return "failed", NO_WORKER
        return None

    async def free_models(self, job: GenerationJob) -> tuple[str, ...]:
        return tuple(await self._builder.models_with_free_workers(exclude=job.model, limit=3))

    def units(self, job: GenerationJob) -> int:
        return requested(job)

    async def cancel_remote(self, job: GenerationJob) -> ImageStatus:
        assert job.horde_id is not None
        return await self._horde.cancel_image(job.horde_id)

    async def cancelled(self, job: GenerationJob, answer: ImageStatus) -> None:
        await self._deliver_status(job, answer, faulted=False, cancelled=True)

    # --- the end ------------------------------------------------------------------------------------

    async def _status_once(self, horde_id: str) -> ImageStatus:
        """The one status call, with one retry after Retry-After on the limiter's 429."""
        try:
            return await self._horde.image_status_once(horde_id)
        except HordeError as exc:
            if not exc.is_rate_limit:
                raise
            await self._clock.sleep(min(max(exc.retry_after or 6.0, 1.0), 60.0))
        return await self._horde.image_status_once(horde_id)

    async def complete(self, job: GenerationJob, check: Check) -> float | None:
        assert job.horde_id is not None
        try:
            status = await self._status_once(job.horde_id)
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                await self.end(
                    job,
                    "expired",
                    "The AI Horde dropped this request before its images could be fetched. Please try again.",
                )
                return None
            log.info("generation job %s: status failed (%s); trying again later", job.id, exc.message)
            return max(exc.retry_after or 0.0, 10.0)
        await self._deliver_status(job, status, faulted=check.faulted or status.faulted, cancelled=False)
        return None

    async def _deliver_status(
        self, job: GenerationJob, status: ImageStatus, *, faulted: bool, cancelled: bool
    ) -> None:
        wanted = requested(job)
        outcome = GenerationOutcome(
            job=job, state="done", requested=wanted, kudos=status.kudos or job.kudos, reply=self.reply(job)
        )
        for index, gen in enumerate(status.generations):
            image = GeneratedImage(
                index=index, data=None, seed=gen.seed, worker_name=gen.worker_name, model=gen.model
            )
            if gen.censored:
                image.censored = True
            else:
                image.data = await self._fetch(job, gen.img)
                image.failed = image.data is None
            outcome.images.append(image)
        delivered = len(outcome.delivered)
        problems: list[str] = []
        missing = wanted - len(status.generations)
        if cancelled:
            outcome.state = "cancelled"
        elif not status.generations:
            outcome.state = "failed"
            outcome.error = (
                "The AI Horde's workers failed to generate this (faulted). "
                "Please try again, or try another model."
                if faulted
                else "The AI Horde finished without any image (its workers failed). Please try again."
            )
        elif missing > 0 or any(image.failed for image in outcome.images):
            outcome.state = "partial"
        if outcome.state == "partial":
            if missing > 0:
                problems.append(f"{missing} of {wanted} images could not be generated by the workers")
            failed = sum(1 for image in outcome.images if image.failed)
            if failed:
                problems.append(f"{failed} image{'s' if failed != 1 else ''} could not be downloaded")
            outcome.error = "Only part of this request came back: " + "; ".join(problems) + "."
        # Held while it is posted: of two processes that both hold a stale view of the job, only one
        # delivers it; one stopped before the end is stored leaves it `delivering` for the next to find.
        if not await self.delivering(job):
            log.info("generation job %s was taken over by another process: not delivered here", job.id)
            return
        if (
            self._ratings is not None
            and job.key_source == "own"
            and status.shared
            and delivered
            and not cancelled
        ):
            try:
                outcome.rating_id = await self._ratings.offer_generation_rating(
                    guild_id=job.guild_id,
                    discord_id=job.user_id,
                    request_id=job.horde_id or "",
                    generation_ids=[g.id for g in status.generations if not g.censored],
                    shared=bool(status.shared),
                )
            except Exception:
                log.exception("generation job %s: offering the rating failed", job.id)
        message_id = await self._deliver_outcome(outcome)
        if not await self._jobs.finish(
            job.id,
            outcome.state,
            self._clock.now(),
            error=outcome.error,
            kudos=outcome.kudos,
            images=delivered,
            result_message_id=message_id,
        ):
            # Stalled past its lease while posting: the other process ends it (finding this post).
            log.info("generation job %s was taken over while its result was posted", job.id)
            return
        await self.after_done(job)
        if delivered:
            await self._publish(outcome, message_id, delivered)

    async def _fetch(self, job: GenerationJob, img: str) -> bytes | None:
        if img.startswith(("http://", "https://")):
            try:
                return await self._horde.download(img, max_bytes=self.settings.max_result_bytes)
            except HordeError as exc:
                log.info("generation job %s: an image could not be downloaded (%s)", job.id, exc.message)
                return None
        if not img or img == "N/A":
            return None
        try:
            data = base64.b64decode(img, validate=True)
        except (binascii.Error, ValueError):
            return None
        return data or None

    async def _deliver_outcome(self, outcome: GenerationOutcome) -> int | None:
        try:
            return await self.deliver.get()(outcome)
        except Exception:
            log.exception("generation job %s: delivery failed", outcome.job.id)
            return None

    async def _publish(self, outcome: GenerationOutcome, message_id: int | None, delivered: int) -> None:
        job = outcome.job
        event = GenerationCompleted(
            job_id=job.id,
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id or 0,
            message_id=message_id,
            style=job.style,
            model=next((i.model for i in outcome.images if i.model), job.model),
            images=delivered,
            anonymous=job.anonymous,
            prompt=str(job.payload.get("prompt", "")).split(NEGATIVE_SEPARATOR, 1)[0],
        )
        await self.on_completed.emit(event)

    async def tell_end(
        self, job: GenerationJob, state: str, error: str, exception: BaseException | None
    ) -> int | None:
        outcome = GenerationOutcome(
            job=job,
            state=state,
            requested=requested(job),
            kudos=job.kudos,
            error=error,
            exception=exception,
            reply=self.reply(job),
        )
        return await self._deliver_outcome(outcome)

    async def store_end(self, job: GenerationJob, state: str, error: str, message_id: int | None) -> bool:
        return await self._jobs.finish(
            job.id, state, self._clock.now(), error=error, kudos=job.kudos, result_message_id=message_id
        )
