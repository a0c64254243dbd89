"""Image generation: from a checked request to images delivered, surviving restarts.

Flow: limits (cooldown, in-flight caps) -> safety (prompt, Horde pause, NSFW, source image) ->
`RequestBuilder.build` -> key (`SharedKeyService.resolve`) -> a job row -> `POST /generate/async` ->
one paced `JobPoller` polls `GET /generate/check/{id}` for every job in flight -> at `done`, exactly one
`GET /generate/status/{id}` (one retry after Retry-After on a 429) -> download the WebP files (or decode
base64) -> a `GenerationOutcome` for the Discord layer's `deliver` hook -> `on_completed` subscribers.

The Horde request id is a capability (anyone holding it can cancel): it stays in the database and in
logs; members and buttons only ever see our row id. No API key is stored: resumed jobs need none
(check/status are unauthenticated), and Regenerate resolves the presser's key afresh.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock
from bot.config import GenerationSettings
from bot.db.generation import GenerationJob, GenerationJobRepository
from bot.db.sources import SourceImageStore
from bot.errors import InvalidInputError, PermissionDeniedError, RateLimitedError, UserFacingError
from bot.hooks import Hook
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.generation import ImageCheck, ImageRequest, ImageStatus
from bot.horde.pacer import key_id
from bot.scheduler import ScheduledCall, Scheduler
from bot.services.generation_options import NEGATIVE_SEPARATOR, GenerateOptions, RequestBuilder
from bot.services.guild_config import GuildConfigService
from bot.services.horde_jobs import JobPoller
from bot.services.images import MAX_SIDE, prepare_image_off_loop
from bot.services.ratings import RatingsService
from bot.services.safety import SafetyService, wait_text
from bot.services.sharedkeys import ResolvedKey, SharedKeyService

log = logging.getLogger(__name__)

REQUEST_LIFETIME = 20 * 60  # the Horde deletes a request 20 min after creation or the last pickup
INCIDENT_CODES = ("CorruptPrompt", "TimeoutIP")
NSFW_NOTICE = (
    "NSFW isn't allowed in this channel, so this was generated with NSFW content censored by the workers."
)
CENSORED_NOTICE = "censored by the worker (its safety filter flagged the image)"
GONE = "This generation is no longer known to the bot. Use /generate to start a new one."


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


@dataclass(frozen=True)
class Progress:
    job: GenerationJob
    n: int
    finished: int
    processing: int
    waiting: int
    queue_position: int
    wait_time: int
    kudos: float
    is_possible: bool
    position: int | None = None  # waiting to be sent to the Horde: place in line (the rest is zero)
    waited: float = 0.0  # seconds since the request was sent
    stuck: bool = False  # no worker has taken it for `stuck_notice_after` seconds
    free_models: tuple[str, ...] = ()  # models with idle workers right now (shown when stuck)
    outage: bool = False  # the last `outage_after` checks failed: the Horde isn't answering


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


@dataclass
class _Flight:
    """What the service keeps in memory about one job in flight (the database holds the truth)."""

    sent_at: float | None = None  # monotonic: when the Horde accepted it
    sending: bool = False  # the POST has left: Cancel now means DELETE once the Horde answers
    detached: bool = False  # nobody awaits the POST: its failure is shown on the progress message
    last_progress: tuple[float, tuple[object, ...]] | None = None
    impossible_since: float | None = None
    failures: int = 0  # failed checks in a row
    same: tuple[object, ...] | None = None  # the last check's state, for the back-off
    delay: float = 0.0  # the last poll delay


@dataclass(frozen=True)
class _InLine:
    """A stored job waiting in line to be sent: what its POST needs."""

    job: GenerationJob
    request: ImageRequest
    resolved: ResolvedKey

    @property
    def key(self) -> str:
        return key_id(self.resolved.key.reveal())


class _BackInLine(Exception):
    """The Horde's limiter refused the POST: the job went back to the head of the line."""


DeliverFn = Callable[[GenerationOutcome], Awaitable[int | None]]
ProgressFn = Callable[[Progress], Awaitable[None]]


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
        *,
        tick: float = 1.0,
        sources: SourceImageStore | None = None,
        source_days: int = 3,
    ) -> None:
        self._jobs = jobs
        # img2img sources live apart from job rows, briefly (`bot.db.sources`): only Regenerate needs them.
        self._sources = sources
        self.source_days = source_days
        self._horde = horde
        self._builder = builder
        self._keys = keys
        self._safety = safety
        self._guild_config = guild_config
        self._ratings = ratings
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.poller = JobPoller(
            "generation",
            scheduler,
            clock,
            self._poll,
            tick=tick,
            max_concurrent=16,
            error_delay=settings.max_interval,
            per_second=settings.checks_per_second,
        )
        self._locks: dict[int, asyncio.Lock] = {}
        # Every job in flight, as stored (this process is the only writer): polls and limits read it
        # instead of the database; the database stays the truth across restarts (`resume`).
        self._active: dict[int, GenerationJob] = {}
        self._flights: dict[int, _Flight] = {}
        # Jobs stored and waiting to be sent to the Horde, in order: sent from the head as the pacer
        # allows, by one scheduler job (`_send_due`), so nobody is refused for the bot's own pace.
        self._line: list[_InLine] = []
        self._sender: ScheduledCall | None = None
        self._tick = tick
        # When each member last sent a generation (monotonic; a restart forgets cooldowns, nothing else).
        self._last_submit: dict[int, float] = {}
        # Slots held by submissions being checked and sent (reservation -> member, guild): they count
        # against the in-flight caps until the job is stored, so simultaneous submissions can't overrun.
        self._reserved: dict[int, tuple[int, int | None]] = {}
        self._next_reservation = 0
        # Set by the Discord layer. `deliver` posts an outcome and returns the result message id.
        self.deliver: DeliverFn | None = None
        self.show_progress: ProgressFn | None = None
        # Other features subscribe: called after each delivery (kudos parties award on it).
        self.on_completed: Hook[[GenerationCompleted], object] = Hook("generation.on_completed")

    # --- for other features -------------------------------------------------------------------------

    async def requester_of_message(self, message_id: int) -> int | None:
        """The member who requested the generation whose progress or result message this is."""
        job = await self._jobs.by_message(message_id)
        return job.user_id if job is not None else None

    async def job(self, job_id: int) -> GenerationJob | None:
        cached = self._active.get(job_id)
        return cached if cached is not None else await self._jobs.get(job_id)

    # --- submitting ---------------------------------------------------------------------------------

    async def _reserve(self, *, user_id: int, guild_id: int | None, channel_id: int | None) -> int:
        """The limits (where, how often, how many) and a held slot in one step: two /generate sent at
        once can't both pass a cap.

        Nothing is awaited between the check and the reservation, so no other submission runs in
        between. The slot counts as a job in flight until the job is stored (`_send` swaps it for the
        job) or the submission fails (`_release`)."""
        config = await self._guild_config.get(guild_id)
        # From here on no await: the check and the reservation are atomic for the event loop.
        self._check_limits_now(config, user_id=user_id, guild_id=guild_id, channel_id=channel_id)
        self._next_reservation += 1
        self._reserved[self._next_reservation] = (user_id, guild_id)
        return self._next_reservation

    def _release(self, reservation: int) -> None:
        self._reserved.pop(reservation, None)

    def _check_limits_now(
        self, config: Any, *, user_id: int, guild_id: int | None, channel_id: int | None
    ) -> None:
        if (
            guild_id is not None
            and config.generation_channels
            and channel_id not in config.generation_channels
        ):
            shown = ", ".join(f"<#{c}>" for c in config.generation_channels[:5])
            raise PermissionDeniedError(f"Image generation is only available in {shown} on this server.")
        cooldown = (
            float(config.cooldown_seconds)
            if config.cooldown_seconds is not None
            else self.settings.cooldown_seconds
        )
        pending = [guild for user, guild in self._reserved.values() if user == user_id]
        if pending and cooldown > 0:
            # Another of this member's generations is being sent right now: it starts the cooldown.
            raise RateLimitedError(
                f"Please wait {wait_text(cooldown)} before your next generation.", retry_after=cooldown
            )
        last = self._last_submit.get(user_id)
        if last is not None and cooldown > 0:
            left = cooldown - (self._clock.monotonic() - last)
            if left > 0:
                raise RateLimitedError(
                    f"Please wait {wait_text(left)} before your next generation.", retry_after=left
                )
        mine = sum(1 for job in self._active.values() if job.user_id == user_id) + len(pending)
        if mine >= self.settings.max_per_user:
            raise RateLimitedError(
                f"You already have {mine} generations in progress "
                f"(the limit is {self.settings.max_per_user}). "
                "Wait for one to finish."
            )
        if guild_id is not None:
            theirs = sum(1 for job in self._active.values() if job.guild_id == guild_id)
            theirs += sum(1 for _, guild in self._reserved.values() if guild == guild_id)
            if theirs >= self.settings.max_per_guild:
                raise RateLimitedError(
                    "This server has too many generations in progress right now. Try again in a minute."
                )

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
        reservation = await self._reserve(user_id=user_id, guild_id=guild_id, channel_id=channel_id)
        try:
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
        finally:
            self._release(reservation)

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
        prepared = None
        if source_image is not None:
            prepared = await prepare_image_off_loop(
                source_image, max_bytes=self.settings.max_upload_bytes, max_side=MAX_SIDE
            )
            await self._safety.check_image_safe(
                guild_id=guild_id, user_id=user_id, image=source_image, channel_nsfw=channel_nsfw, is_dm=is_dm
            )
        mask = None
        if mask_image is not None:
            if source_image is None:
                raise InvalidInputError("A `mask` marks what to repaint in an `image`: attach the image too.")
            mask = await prepare_image_off_loop(
                mask_image, max_bytes=self.settings.max_upload_bytes, max_side=MAX_SIDE
            )
        request = await self._builder.build(
            options, guild_id=guild_id, nsfw_allowed=nsfw_allowed, source_image=prepared, mask_image=mask
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
        reservation = await self._reserve(user_id=user_id, guild_id=guild_id, channel_id=channel_id)
        try:
            return await self._regenerate_reserved(
                job,
                reservation,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                channel_nsfw=channel_nsfw,
                is_dm=is_dm,
            )
        finally:
            self._release(reservation)

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
        request = await self._with_source(job, ImageRequest.model_validate(job.payload))
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
        """Store the job as waiting to be sent and put it in line. If the pacer lets it go at once, the
        member waits for the Horde's answer (a refusal is the command's error, as ever); if it must wait
        in line, the member is shown its place at once and the answer comes on the progress message."""
        resolved = await self._keys.resolve(user_id, guild_id, channel_id=channel_id)
        params = request.params
        self._keys.check_image(resolved, params.width or 512, params.height or 512, params.steps or 30)
        await self._safety.check_horde_available()
        now = self._clock.now()
        payload = request.payload()
        source_id = None
        if isinstance(payload.get("source_image"), str):
            # Sent from memory; stored apart (and briefly) for Regenerate only, never in the job row.
            source = base64.b64decode(str(payload.pop("source_image")))
            if self._sources is not None:
                source_id = await self._sources.put(user_id, source, now)
        self._last_submit[user_id] = self._clock.monotonic()
        if len(self._last_submit) > 10000:
            horizon = self._clock.monotonic() - 3600
            self._last_submit = {u: t for u, t in self._last_submit.items() if t > horizon}
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
            source_id=source_id,
        )
        self._active[record.id] = record
        if reservation is not None:
            self._release(reservation)  # in the same step: the stored job now holds the slot
        entry = _InLine(record, request, resolved)
        flight = self._flights.setdefault(record.id, _Flight())
        if not self._line and self._horde.pacer.try_acquire("image", entry.key):
            # Nobody in line and a free slot: sent now, and a refusal is the command's error as ever.
            try:
                return await self._post(entry)
            except _BackInLine:
                pass  # the Horde's limiter said no after all: it waits at the head of the line
        else:
            self._line.append(entry)
            self._start_sender()
        # Waiting in line: the member sees where at once; the Horde's answer comes on the message.
        flight.detached = True
        return Submitted(
            record.id,
            0.0,
            params.n or 1,
            notice,
            resolved.source == "anon",
            position=self.position(record.id),
        )

    def position(self, job_id: int) -> int | None:
        """A job's place in the line of jobs waiting to be sent (1 = next), None once it is sent."""
        for index, entry in enumerate(self._line):
            if entry.job.id == job_id:
                return index + 1
        return None

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = self._scheduler.every("generation-send", self._tick, self._send_due)

    async def _send_due(self) -> None:
        """One pass of the line: send from its head, in order, as fast as the pacer allows until the next
        pass (a slot due before the next tick is waited for, so the line moves at the Horde's full rate)."""
        sent = False
        pacer = self._horde.pacer
        while self._line:
            wait = pacer.next_free("image", self._line[0].key)
            if wait >= self._tick:
                break
            if wait > 0:
                await self._clock.sleep(wait)
                if not self._line:
                    break
            if not pacer.try_acquire("image", self._line[0].key):
                break
            entry = self._line.pop(0)
            sent = True
            try:
                await self._post(entry)
            except _BackInLine:
                break
            except HordeError:
                continue  # told on the job's own message
        if sent:
            self._line_moved()

    async def _post(self, entry: _InLine) -> Submitted:
        """Send one job (its slot in the pacer is taken). Stores "submitting" first, so a restart never
        sends a job twice: a "submitting" job is failed after a restart, a "queued" one is sent."""
        job, request, resolved = entry.job, entry.request, entry.resolved
        flight = self._flights.setdefault(job.id, _Flight())
        flight.sending = True
        await self._jobs.set_state(job.id, "submitting", self._clock.now())
        if job.id in self._active:
            self._active[job.id] = dataclasses.replace(self._active[job.id], state="submitting")
        try:
            accepted = await self._horde.generate_image(request, resolved.key, acquired=True)
        except HordeError as exc:
            if exc.is_rate_limit and job.id in self._active:
                # Not processed by the Horde (the pacer now holds back as the 429 said): first in line.
                flight.sending = False
                await self._jobs.set_state(job.id, "queued", self._clock.now())
                self._active[job.id] = dataclasses.replace(self._active[job.id], state="queued")
                self._line.insert(0, entry)
                self._start_sender()
                raise _BackInLine from exc
            self._active.pop(job.id, None)
            await self._jobs.finish(job.id, "failed", self._clock.now(), error=_error_text(exc))
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
            if flight.detached:
                # Sent from the line after the member's command returned: said on the message.
                await self._finish_without_images(
                    job, "failed", _error_text(exc), exception=exc, already_stored=True
                )
            else:
                self._forget(job.id)
            raise
        n = request.params.n or 1
        kudos = round(accepted.kudos * n, 2) if accepted.kudos else 0.0
        await self._jobs.submitted(job.id, accepted.id, kudos, self._clock.now())
        flight.sent_at = self._clock.monotonic()
        flight.last_progress = None  # "waiting to be sent" gives way to the Horde's queue at the first check
        live = self._active.get(job.id)
        if live is not None:
            cancelling = live.state == "cancelling"
            self._active[job.id] = dataclasses.replace(
                live, horde_id=accepted.id, kudos=kudos, state="cancelling" if cancelling else "waiting"
            )
            if cancelling:
                # Cancelled while the POST was on its way: the DELETE goes at the next poll.
                await self._jobs.set_state(job.id, "cancelling", self._clock.now())
                self.poller.track(job.id, 0)
            else:
                self.poller.track(job.id, self.settings.min_interval)
        self.poller.start()
        log.info("generation job %s submitted for member %s (%s)", job.id, job.user_id, resolved.source)
        return Submitted(job.id, kudos, n, job.notice, resolved.source == "anon")

    def _line_moved(self) -> None:
        """Everyone in line moved up: their progress messages say so (throttled per job)."""
        for index, entry in enumerate(self._line):
            job = self._active.get(entry.job.id)
            if job is not None:
                self._show(job, Progress(job, _requested(job), 0, 0, 0, 0, 0, job.kudos, True, index + 1))

    async def _with_source(self, job: GenerationJob, request: ImageRequest) -> ImageRequest:
        """The request as stored, with its img2img source put back from the source store (the job row
        keeps none). Raises UserFacingError saying so when the source is no longer kept."""
        if request.source_processing and not request.source_image:
            source = None
            if self._sources is not None and job.source_id is not None:
                source = await self._sources.get(job.source_id, self._clock.now())
            if source is None:
                raise UserFacingError(self.source_gone_text)
            request.source_image = base64.b64encode(source).decode()
        return request

    @property
    def source_note(self) -> str:
        """What /generate's result says about an img2img source (Regenerate needs it)."""
        return (
            f"Kept {self.source_days} day{'s' if self.source_days != 1 else ''} after its last use, for "
            "Regenerate. After that, Regenerate asks you to attach the image to /generate again."
        )

    @property
    def source_gone_text(self) -> str:
        days = f"{self.source_days} day{'s' if self.source_days != 1 else ''}"
        return (
            f"The source image of this generation is no longer kept (the bot keeps img2img sources {days} "
            "after their last use, and within a size limit), so Regenerate can't repeat it. Run /generate "
            "again and attach the image."
        )

    async def attach_message(self, job_id: int, message_id: int) -> None:
        """The progress message (the interaction's original response) of a job."""
        await self._jobs.set_message(job_id, message_id, self._clock.now())
        cached = self._active.get(job_id)
        if cached is not None:
            self._active[job_id] = dataclasses.replace(cached, message_id=message_id)

    # --- polling --------------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Pick up the jobs of the previous run; returns how many are polled or sent again.

        Jobs still waiting to be sent are sent now, once, in their order; a job whose POST was on its way
        when the bot stopped may or may not have reached the Horde, so it is failed rather than sent twice."""
        resumed = 0
        for job in await self._jobs.active():
            self._active[job.id] = job
            if job.state == "queued":
                try:
                    resolved = await self._keys.resolve(job.user_id, job.guild_id, channel_id=job.channel_id)
                    request = await self._with_source(job, ImageRequest.model_validate(job.payload))
                except Exception as exc:
                    log.info("generation job %s: can't be sent after the restart (%s)", job.id, exc)
                    await self._finish_without_images(
                        job,
                        "failed",
                        getattr(exc, "message", None) or "This request could not be sent after a restart.",
                        exception=exc,
                    )
                    continue
                self._line.append(_InLine(job, request, resolved))
                self._flights[job.id] = _Flight(detached=True)
                self._start_sender()
                resumed += 1
                continue
            if job.horde_id is None:
                await self._finish_without_images(
                    job, "failed", "The bot restarted while sending this request. Please try again."
                )
                continue
            self._flights.setdefault(job.id, _Flight(sent_at=self._clock.monotonic()))
            self.poller.track(job.id, 0)
            resumed += 1
        self.poller.start()
        return resumed

    def _lock(self, job_id: int) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    def next_delay(self, job_id: int, check: ImageCheck) -> float:
        """The Horde's estimate (`poll_delay`) while the request moves; while successive checks return
        the same state with no worker on it, each wait is `backoff_factor` longer, up to `backoff_max`;
        any change starts again from the estimate."""
        flight = self._flights.setdefault(job_id, _Flight())
        state = _state(check)
        base = poll_delay(check, self.settings)
        if flight.same == state and not (check.processing or check.finished):
            grown = min(self.settings.backoff_max, flight.delay * self.settings.backoff_factor)
            delay = max(base, grown)
        else:
            delay = base
        flight.same, flight.delay = state, delay
        return delay

    async def _poll(self, job_id: int) -> float | None:
        async with self._lock(job_id):
            job = self._active.get(job_id)
            if job is None or not job.active or job.horde_id is None:
                self._forget(job_id)
                return None
            if job.state == "cancelling":
                await self._cancel_locked(job)
                return None
            flight = self._flights.setdefault(job_id, _Flight(sent_at=self._clock.monotonic()))
            try:
                check = await self._horde.image_check(job.horde_id)
            except HordeError as exc:
                return await self._poll_failed(job, flight, exc)
            recovered = flight.failures >= self.settings.outage_after
            flight.failures = 0
            if check.done or check.faulted:
                return await self._complete(job, faulted=check.faulted)
            now = self._clock.monotonic()
            if not check.is_possible:
                if flight.impossible_since is None:
                    flight.impossible_since = now
                if now - flight.impossible_since >= self.settings.impossible_timeout:
                    await self._give_up_impossible(job)
                    return None
            else:
                flight.impossible_since = None
            if recovered:
                flight.last_progress = None  # the outage notice goes at once
            await self._report(job, flight, check)
            return self.next_delay(job_id, check)

    async def _poll_failed(self, job: GenerationJob, flight: _Flight, exc: HordeError) -> float | None:
        if exc.status == 404 and not isinstance(exc, HordeUnavailable):
            await self._finish_without_images(
                job,
                "expired",
                "The AI Horde dropped this request: no worker finished it within 20 minutes "
                "(or it expired after a restart). Please try again.",
            )
            return None
        if exc.is_rate_limit:
            return max(exc.retry_after or self.settings.min_interval, self.settings.min_interval)
        flight.failures += 1
        failures = flight.failures
        log.info("generation job %s: check failed (%s); retrying", job.id, exc.message)
        if (self._clock.now() - job.updated_at).total_seconds() > REQUEST_LIFETIME + 600 and failures > 10:
            await self._finish_without_images(
                job,
                "failed",
                "The AI Horde could not be reached for too long; this request was given up. "
                "Please try again later.",
            )
            return None
        if failures == self.settings.outage_after:
            # The member is told the Horde isn't answering, and that the request is safe.
            flight.last_progress = None
            self._show(job, self._waiting_progress(job, flight, outage=True))
        return float(min(self.settings.max_interval, self.settings.min_interval * (2 ** min(failures, 5))))

    def _waiting_progress(self, job: GenerationJob, flight: _Flight, *, outage: bool = False) -> Progress:
        waited = self._clock.monotonic() - flight.sent_at if flight.sent_at is not None else 0.0
        return Progress(job, _requested(job), 0, 0, 0, 0, 0, job.kudos, True, waited=waited, outage=outage)

    async def _report(self, job: GenerationJob, flight: _Flight, check: ImageCheck) -> None:
        """The member's view of a check: counts, queue, ETA, time waited, and past `stuck_notice_after`
        with no worker on it, that none has taken it yet (with the models whose workers are free)."""
        waited = self._clock.monotonic() - flight.sent_at if flight.sent_at is not None else 0.0
        stuck = not (check.processing or check.finished) and waited >= self.settings.stuck_notice_after
        free: tuple[str, ...] = ()
        if stuck and self.show_progress is not None:
            free = tuple(await self._builder.models_with_free_workers(exclude=job.model, limit=3))
        self._show(
            job,
            Progress(
                job=job,
                n=_requested(job),
                finished=check.finished,
                processing=check.processing,
                waiting=check.waiting,
                queue_position=check.queue_position,
                wait_time=check.wait_time,
                kudos=check.kudos or job.kudos,
                is_possible=check.is_possible,
                waited=waited,
                stuck=stuck,
                free_models=free,
            ),
        )

    def _show(self, job: GenerationJob, progress: Progress) -> None:
        """Edit the progress message if the member would notice a difference, at most once per
        `progress_interval` per job (an outage notice and its end go at once)."""
        if self.show_progress is None:
            return
        flight = self._flights.setdefault(job.id, _Flight())
        # What a member would notice: counts, queue position, the ETA in 10-second steps, minutes waited.
        shape: tuple[object, ...] = (
            progress.finished,
            progress.processing,
            progress.waiting,
            progress.queue_position,
            progress.wait_time // 10,
            progress.is_possible,
            progress.position,
            int(progress.waited // 60),
            progress.stuck,
            progress.free_models,
            progress.outage,
        )
        now = self._clock.monotonic()
        last = flight.last_progress
        if last is not None and (last[1] == shape or now - last[0] < self.settings.progress_interval):
            return
        flight.last_progress = (now, shape)
        # A progress edit may be rate limited by Discord: never let it hold up polling.
        self._scheduler.spawn(self._progress(progress), name=f"generation-progress-{job.id}")

    async def _progress(self, progress: Progress) -> None:
        assert self.show_progress is not None
        try:
            await self.show_progress(progress)
        except Exception:
            log.info("generation job %s: progress update failed", progress.job.id, exc_info=True)

    async def _give_up_impossible(self, job: GenerationJob) -> None:
        assert job.horde_id is not None
        try:
            await self._horde.cancel_image(job.horde_id)
        except HordeError:
            log.info("generation job %s: cancelling an impossible request failed", job.id)
        await self._finish_without_images(
            job,
            "failed",
            "No AI Horde worker can take this request right now (model, size or options nobody serves). "
            "Try another model or smaller settings.",
        )

    # --- finishing ------------------------------------------------------------------------------------

    async def _status_once(self, horde_id: str) -> ImageStatus:
        """The one status call, with one retry after Retry-After on the limiter's 429."""
        try:
            return await self._horde.image_status_once(horde_id)
        except HordeError as exc:
            if not exc.is_rate_limit:
                raise
            await self._clock.sleep(min(max(exc.retry_after or 6.0, 1.0), 60.0))
        return await self._horde.image_status_once(horde_id)

    async def _complete(self, job: GenerationJob, *, faulted: bool) -> float | None:
        assert job.horde_id is not None
        try:
            status = await self._status_once(job.horde_id)
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                await self._finish_without_images(
                    job,
                    "expired",
                    "The AI Horde dropped this request before its images could be fetched. Please try again.",
                )
                return None
            log.info("generation job %s: status failed (%s); trying again later", job.id, exc.message)
            return max(exc.retry_after or 0.0, 10.0)
        await self._deliver_status(job, status, faulted=faulted or status.faulted, cancelled=False)
        return None

    async def _deliver_status(
        self, job: GenerationJob, status: ImageStatus, *, faulted: bool, cancelled: bool
    ) -> None:
        requested = _requested(job)
        outcome = GenerationOutcome(
            job=job, state="done", requested=requested, kudos=status.kudos or job.kudos
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
        missing = requested - len(status.generations)
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
                problems.append(f"{missing} of {requested} images could not be generated by the workers")
            failed = sum(1 for image in outcome.images if image.failed)
            if failed:
                problems.append(f"{failed} image{'s' if failed != 1 else ''} could not be downloaded")
            outcome.error = "Only part of this request came back: " + "; ".join(problems) + "."
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
        await self._jobs.finish(
            job.id,
            outcome.state,
            self._clock.now(),
            error=outcome.error,
            kudos=outcome.kudos,
            images=delivered,
            result_message_id=message_id,
        )
        self._forget(job.id)
        if job.key_source == "guild" and job.guild_id is not None:
            try:
                await self._keys.after_guild_request(job.guild_id)
            except Exception:
                log.exception("generation job %s: guild key refresh failed", job.id)
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
        if self.deliver is None:
            log.warning("generation job %s finished but nothing delivers results", outcome.job.id)
            return None
        try:
            return await self.deliver(outcome)
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
            prompt=str(job.payload.get("prompt", "")).split("###", 1)[0],
        )
        await self.on_completed.emit(event)

    async def _finish_without_images(
        self,
        job: GenerationJob,
        state: str,
        error: str,
        *,
        exception: BaseException | None = None,
        already_stored: bool = False,
    ) -> None:
        outcome = GenerationOutcome(
            job=job, state=state, requested=_requested(job), kudos=job.kudos, error=error, exception=exception
        )
        message_id = await self._deliver_outcome(outcome)
        if not already_stored or message_id is not None:
            await self._jobs.finish(
                job.id, state, self._clock.now(), error=error, kudos=job.kudos, result_message_id=message_id
            )
        self._forget(job.id)

    def _forget(self, job_id: int) -> None:
        self._active.pop(job_id, None)
        self.poller.forget(job_id)
        self._flights.pop(job_id, None)
        self._locks.pop(job_id, None)

    async def forget_member(self, user_id: int) -> None:
        """/logout step: the member's jobs in flight stop (cancelled on the Horde, best effort) and every
        job row of theirs is deleted, with its prompt and Horde id."""
        for job in [j for j in self._active.values() if j.user_id == user_id]:
            self._forget(job.id)
            if job.horde_id is not None:
                try:
                    await self._horde.cancel_image(job.horde_id)
                except HordeError as exc:
                    log.info("generation job %s: cancel at /logout failed: %s", job.id, exc)
        await self._jobs.forget_member(user_id)

    # --- buttons --------------------------------------------------------------------------------------

    async def cancel(self, job_id: int, user_id: int) -> CancelResult:
        """Cancel for the requester: DELETE on the Horde, deliver what was finished. Twice is harmless."""
        job = await self.job(job_id)
        if job is None:
            raise UserFacingError(GONE)
        if job.user_id != user_id:
            raise PermissionDeniedError("Only the member who asked for this generation can cancel it.")
        async with self._lock(job_id):
            job = await self.job(job_id)
            if job is None or not job.active:
                return CancelResult(True, job.state if job is not None else "done")
            in_line = [entry for entry in self._line if entry.job.id == job.id]
            if in_line:
                # Still waiting to be sent: it leaves the line and no POST is ever sent for it.
                self._line.remove(in_line[0])
                self._line_moved()
                await self._finish_without_images(
                    job, "cancelled", "Cancelled before it was sent to the AI Horde."
                )
                return CancelResult(False, "cancelled")
            await self._jobs.set_state(job.id, "cancelling", self._clock.now())
            job = dataclasses.replace(job, state="cancelling")
            if job.id in self._active:
                self._active[job.id] = job
            if job.horde_id is None:
                return CancelResult(False, "cancelling")
            await self._cancel_locked(job)
        return CancelResult(False, "cancelled")

    async def _cancel_locked(self, job: GenerationJob) -> None:
        assert job.horde_id is not None
        self.poller.forget(job.id)
        try:
            status = await self._horde.cancel_image(job.horde_id)
        except HordeError as exc:
            if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                await self._finish_without_images(job, "cancelled", "Cancelled.")
                return
            # Keep the row "cancelling": the poller tries the DELETE again.
            self.poller.track(job.id, self.settings.min_interval * 2)
            raise
        await self._deliver_status(job, status, faulted=False, cancelled=True)

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


def poll_delay(check: ImageCheck, settings: GenerationSettings) -> float:
    """How long until a job's next check: soon when work is under way, later the longer the queue."""
    if check.processing or check.finished:
        # A worker has it: results are fetched within moments of being done.
        return float(settings.min_interval)
    wanted = max(check.wait_time / 4, check.queue_position / 10)
    return float(min(settings.max_interval, max(settings.min_interval, wanted)))


def _state(check: ImageCheck) -> tuple[object, ...]:
    """What counts as "the request moved" for the back-off (the ETA alone jitters, so it doesn't)."""
    return (
        check.finished,
        check.processing,
        check.waiting,
        check.restarted,
        check.queue_position,
        check.is_possible,
    )


def _requested(job: GenerationJob) -> int:
    params = job.payload.get("params")
    n = params.get("n") if isinstance(params, Mapping) else None
    return int(n) if isinstance(n, int) and n > 0 else 1


def _error_text(exc: HordeError) -> str:
    return f"{exc.rc or exc.status}: {exc.message}"[:1000]


__all__ = [
    "CENSORED_NOTICE",
    "NSFW_NOTICE",
    "CancelResult",
    "GeneratedImage",
    "GenerationOutcome",
    "GenerationService",
    "GenerationSettings",
    "Progress",
    "Submitted",
]
