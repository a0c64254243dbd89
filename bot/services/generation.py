"""Image generation: the service /generate, Regenerate and Cancel call.

Flow: limits (`GenerationLimits`: cooldown, in-flight caps, reserved slots) -> safety (prompt, Horde
pause, NSFW, source image) -> `RequestBuilder.build` -> key (`SharedKeyService.resolve`) -> a job row
(`queued`) -> the job engine (`bot.services.jobs.engine`: the pacer's line, `POST /generate/async`, paced
checks with back-off, outage notices, resume after a restart) -> at `done`, the image adapter
(`ImageJobs`, bot/services/generation_delivery.py) fetches the images once and hands a `GenerationOutcome`
to the Discord layer's `deliver` hook, then to `on_completed` subscribers.

The Horde request id is a capability (anyone holding it can cancel): it stays in the database and in
logs; members and buttons only ever see our row id. No API key is stored: resumed jobs need none
(check/status are unauthenticated), and Regenerate resolves the presser's key afresh.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.config import GenerationSettings
from bot.db.generation import CapReached, GenerationJob, GenerationJobRepository
from bot.db.sources import SourceImageStore
from bot.errors import InvalidInputError, PermissionDeniedError, UserFacingError
from bot.hooks import Hook, Port
from bot.horde.client import HordeClient
from bot.horde.generation import ImageRequest
from bot.scheduler import Scheduler
from bot.services.generation_delivery import DeliverFn, ImageJobs, poll_delay
from bot.services.generation_limits import GenerationLimits
from bot.services.generation_options import NEGATIVE_SEPARATOR, GenerateOptions, RequestBuilder
from bot.services.generation_records import (
    CENSORED_NOTICE,
    GONE,
    NSFW_NOTICE,
    CancelResult,
    GeneratedImage,
    GenerationCompleted,
    GenerationOutcome,
    Submitted,
    image_pace,
    source_gone_text,
    source_note,
)
from bot.services.guild_config import GuildConfigService
from bot.services.images import MAX_SIDE, ImageWorker
from bot.services.jobs.engine import JobEngine, Progress, ProgressFn
from bot.services.jobs.poller import JobPoller
from bot.services.jobs.replies import ReplyTokens
from bot.services.ratings import RatingsService
from bot.services.safety import SafetyService
from bot.services.sharedkeys import SharedKeyService

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(
        self,
        jobs: GenerationJobRepository,
        horde: HordeClient,
        builder: RequestBuilder,
        keys: SharedKeyService,
        safety: SafetyService,
        guild_config: GuildConfigService,
        ratings: RatingsService | None,
        scheduler: Scheduler,
        clock: Clock,
        settings: GenerationSettings,
        images: ImageWorker,
        *,
        tick: float = 1.0,
        sources: SourceImageStore | None = None,
        source_days: int = 3,
        takeovers: Hook[[], object] | None = None,
        replies: ReplyTokens | None = None,
    ) -> None:
        self._jobs = jobs
        self._images = images
        # img2img sources live apart from job rows, briefly (`bot.db.sources`): only Regenerate needs them.
        self._sources = sources
        self.source_days = source_days
        self._builder = builder
        self._keys = keys
        self._safety = safety
        self._clock = clock
        self._settings = settings
        self.adapter = ImageJobs(
            jobs,
            horde,
            builder,
            keys,
            safety,
            ratings,
            clock,
            settings,
            sources=sources,
            source_days=source_days,
            replies=replies,
        )
        self.engine: JobEngine[GenerationJob, ImageRequest] = JobEngine(
            self.adapter, horde.pacer, scheduler, clock, image_pace(settings), tick=tick, takeovers=takeovers
        )
        self.limits = GenerationLimits(
            guild_config,
            clock,
            settings,
            self.engine.jobs,
            elsewhere=jobs.in_flight_elsewhere if jobs.shared else None,
        )
        # Where the Discord layer plugs in (the cog: in cog_load, out in cog_unload) and other features
        # listen: posting an outcome (returns the result message id), showing progress, and each delivery
        # (kudos parties award on it).
        self.deliver: Port[DeliverFn] = self.adapter.deliver
        self.show_progress: Port[ProgressFn] = self.engine.show_progress
        self.on_completed: Hook[[GenerationCompleted], object] = self.adapter.on_completed

    @property
    def settings(self) -> GenerationSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: GenerationSettings) -> None:
        """New limits and pacing reach every part at once."""
        self._settings = self.limits.settings = self.adapter.settings = settings
        self.engine.pace = image_pace(settings)

    @property
    def poller(self) -> JobPoller:
        return self.engine.poller

    # --- for other features -------------------------------------------------------------------------

    async def requester_of_message(self, message_id: int) -> int | None:
        """The member who requested the generation whose progress or result message this is."""
        job = await self._jobs.by_message(message_id)
        return job.user_id if job is not None else None

    async def job(self, job_id: int) -> GenerationJob | None:
        cached = self.engine.get(job_id)
        return cached if cached is not None else await self._jobs.get(job_id)

    # --- submitting ---------------------------------------------------------------------------------

    async def submit(
        self,
        options: GenerateOptions,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool,
        is_dm: bool,
        source_image: bytes | Callable[[], Awaitable[bytes]] | None = None,
        mask_image: bytes | Callable[[], Awaitable[bytes]] | None = None,
    ) -> Submitted:
        """Check everything, send, persist. Raises a UserFacingError (or HordeError) saying what is wrong.

        `source_image` may be a download (the attachment's `read`): it runs while the member's slot is
        held, so a second /generate sent during the download is counted against the caps."""
        # Every option first: a bad value is refused before the download, the safety checks (one of them
        # asks the Horde about the source image), the caps and the database.
        options = await self._builder.precheck(options, guild_id=guild_id, has_image=source_image is not None)
        async with self.limits.reserved(
            user_id=user_id, guild_id=guild_id, channel_id=channel_id
        ) as reservation:
            return await self._submit_reserved(
                options,
                reservation,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                channel_nsfw=channel_nsfw,
                is_dm=is_dm,
                source_image=source_image,
                mask_image=mask_image,
            )

    async def _submit_reserved(
        self,
        options: GenerateOptions,
        reservation: int,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool,
        is_dm: bool,
        source_image: bytes | Callable[[], Awaitable[bytes]] | None,
        mask_image: bytes | Callable[[], Awaitable[bytes]] | None = None,
    ) -> Submitted:
        if callable(source_image):
            source_image = await source_image()
        if callable(mask_image):
            mask_image = await mask_image()
        await self._safety.check_prompt(
            guild_id=guild_id,
            user_id=user_id,
            prompt=options.prompt,
            negative=options.negative,
            channel_id=channel_id,
        )
        nsfw_allowed = await self._safety.nsfw_allowed(
            guild_id=guild_id, channel_nsfw=channel_nsfw, is_dm=is_dm
        )
        notice: str | None = None
        if options.nsfw and not nsfw_allowed:
            # Decided: not refused, sent censored (nsfw false, censor_nsfw true), and said so.
            options = dataclasses.replace(options, nsfw=False)
            notice = NSFW_NOTICE
        # Checked from their headers here; converted by the builder once it knows the request's size.
        source = None
        if source_image is not None:
            source = await self._images.inspect(
                source_image, max_bytes=self.settings.max_upload_bytes, max_side=MAX_SIDE
            )
        mask = None
        if mask_image is not None:
            if source_image is None:
                raise InvalidInputError("A `mask` marks what to repaint in an `image`: attach the image too.")
            mask = await self._images.inspect(
                mask_image, max_bytes=self.settings.max_upload_bytes, max_side=MAX_SIDE
            )
        request = await self._builder.build(
            options, guild_id=guild_id, nsfw_allowed=nsfw_allowed, source_image=source, mask_image=mask
        )
        # The request carries the converted image now: the upload's bytes are not kept for the wait below.
        source_image = mask_image = source = mask = None
        if request.source_image is not None:
            # The image checked is the one the request sends, converted once at its size: a second
            # conversion of the upload at full size for the check held ~100 MiB (213 for an RGBA PNG).
            await self._safety.check_image_safe(
                guild_id=guild_id,
                user_id=user_id,
                source_image=request.source_image,
                channel_nsfw=channel_nsfw,
                is_dm=is_dm,
            )
        if not nsfw_allowed:
            request.nsfw, request.censor_nsfw = False, True
        request.replacement_filter = True
        return await self._send(
            request,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            private=options.private,
            notice=notice,
            reservation=reservation,
            # By name, as members and parties know it (the request carries the style's id).
            style=await self._builder.style_name(request.style),
        )

    async def regenerate(
        self,
        job_id: int,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool = False,
        is_dm: bool = False,
    ) -> Submitted:
        """The same request again with a new seed, as the member who pressed Regenerate."""
        job = await self.job(job_id)
        if job is None:
            raise UserFacingError(GONE)
        async with self.limits.reserved(
            user_id=user_id, guild_id=guild_id, channel_id=channel_id
        ) as reservation:
            return await self._regenerate_reserved(
                job,
                reservation,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                channel_nsfw=channel_nsfw,
                is_dm=is_dm,
            )

    async def _regenerate_reserved(
        self,
        job: GenerationJob,
        reservation: int,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool,
        is_dm: bool,
    ) -> Submitted:
        prompt = str(job.payload.get("prompt", ""))
        positive, _, negative = prompt.partition(NEGATIVE_SEPARATOR)
        await self._safety.check_prompt(
            guild_id=guild_id,
            user_id=user_id,
            prompt=positive,
            negative=negative or None,
            channel_id=channel_id,
        )
        request = await self.adapter.with_source(job, ImageRequest.model_validate(job.payload))
        request.params.seed = str(random.randint(0, 2**32 - 1))
        request.replacement_filter = True
        notice = job.notice
        # Where the button is pressed decides NSFW again (a result can be forwarded or DMed).
        if request.nsfw and not await self._safety.nsfw_allowed(
            guild_id=guild_id, channel_nsfw=channel_nsfw, is_dm=is_dm
        ):
            request.nsfw, request.censor_nsfw = False, True
            notice = NSFW_NOTICE
        return await self._send(
            request,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            private=job.private,
            notice=notice,
            style=job.style,
            reservation=reservation,
        )

    async def _send(
        self,
        request: ImageRequest,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        private: bool,
        notice: str | None,
        style: str | None,
        reservation: int | None = None,
    ) -> Submitted:
        """Store the job as waiting to be sent and hand it to the engine. If the pacer lets it go at once,
        the member waits for the Horde's answer (a refusal is the command's error, as ever); if it must
        wait in line, the member is shown its place at once and the answer comes on the progress message."""
        resolved = await self._keys.resolve(user_id, guild_id, channel_id=channel_id)
        params = request.params
        self._keys.check_image(resolved, params.width or 512, params.height or 512, params.steps or 30)
        await self._safety.check_horde_available()
        now = self._clock.now()
        payload = request.payload()
        # An img2img source is sent from memory, never kept in the job row; stored apart (and briefly) for
        # Regenerate only, in the transaction that stores the job: a job the caps refuse there leaves none.
        image = payload.pop("source_image", None)
        source = base64.b64decode(image) if isinstance(image, str) and self._sources is not None else None
        try:
            record = await self._jobs.create(
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                private=private,
                anonymous=resolved.source == "anon",
                key_source=resolved.source,
                payload=payload,
                notice=notice,
                style=style,
                model=request.models[0] if request.models else None,
                now=now,
                source=source,
                caps=self.limits.caps(reservation),
            )
        except CapReached as reached:
            # Another process stored one of this member's (or this server's) jobs since `reserve` looked.
            raise self.limits.refusal(reached) from None
        if self._sources is not None and record.source_id is not None:
            await self._sources.evict_over_bound(keep=record.source_id)
        self.limits.started(user_id)
        # The stored job now holds the member's slot: the reservation goes, and the engine takes the job
        # in before its first await, so no other submission sees neither.
        self.limits.release(reservation)
        sent = await self.engine.start(record, request, resolved)
        anonymous = resolved.source == "anon"
        return Submitted(record.id, sent.kudos, params.n or 1, notice, anonymous, position=sent.position)

    def position(self, job_id: int) -> int | None:
        """A job's place in the line of jobs waiting to be sent (1 = next), None once it is sent."""
        return self.engine.position(job_id)

    async def grid_preview(self, images: list[bytes]) -> bytes | None:
        """A contact sheet of a result's images (`grid_preview`), made in the image worker's threads."""
        return await self._images.grid(images)

    @property
    def source_note(self) -> str:
        """What /generate's result says about an img2img source (Regenerate needs it)."""
        return source_note(self.source_days)

    @property
    def source_gone_text(self) -> str:
        return source_gone_text(self.source_days)

    async def keep_reply(self, job_id: int, token: str) -> None:
        """The command's interaction token, kept with the job (`bot.services.jobs.replies`)."""
        await self.adapter.keep_reply(job_id, token)

    async def attach_message(self, job_id: int, message_id: int) -> None:
        """The progress message (the interaction's original response) of a job."""
        await self._jobs.set_message(job_id, message_id, self._clock.now())
        self.engine.replace(job_id, message_id=message_id)

    async def resume(self) -> int:
        """Pick up the jobs of the previous run (`JobEngine.resume`)."""
        return await self.engine.resume()

    async def forget_member(self, user_id: int) -> None:
        """/logout step: the member's jobs in flight stop (cancelled on the Horde, best effort) and every
        job row of theirs is deleted, with its prompt and Horde id."""
        await self.engine.forget_member(user_id)
        await self._jobs.forget_member(user_id)

    # --- buttons --------------------------------------------------------------------------------------

    async def cancel(self, job_id: int, user_id: int) -> CancelResult:
        """Cancel for the requester: out of the line, or DELETE on the Horde and deliver what was
        finished. Twice is harmless."""
        job = await self.job(job_id)
        if job is None:
            raise UserFacingError(GONE)
        if job.user_id != user_id:
            raise PermissionDeniedError("Only the member who asked for this generation can cancel it.")
        result = await self.engine.cancel(job)
        return CancelResult(result.already_finished, result.state)

    async def check_delete(self, job_id: int, user_id: int, *, moderator: bool) -> None:
        job = await self.job(job_id)
        if job is None:
            if moderator:
                return
            raise UserFacingError(GONE)
        if job.user_id != user_id and not moderator:
            raise PermissionDeniedError(
                "Only the member who asked for these images, or a moderator (Manage Messages), "
                "can delete them."
            )


__all__ = [
    "CENSORED_NOTICE",
    "NSFW_NOTICE",
    "CancelResult",
    "GeneratedImage",
    "GenerationCompleted",
    "GenerationOutcome",
    "GenerationService",
    "GenerationSettings",
    "Progress",
    "Submitted",
    "poll_delay",
]
