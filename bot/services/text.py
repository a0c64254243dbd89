"""Text generation on the AI Horde: `/text` and the turns of `/chat`.

Flow: check the model is served and the sizes fit its workers -> pick the key -> store a job row
(`queued`) -> the job engine (`bot.services.jobs.engine`: the pacer's line with its position shown,
`POST /generate/text/async`, polls, outage notices, resume after a restart) polls
`GET /generate/text/status/{id}` through `TextJobs`, this kind's adapter (there is no text /check and status
is limited to 60 a minute per request, so polls are `poll_interval` apart, at least 1 s) -> `TextOutcome`
to the hooks and the delivery function the Discord layer registered.

A model can vanish while a request waits (its last worker goes offline). The poll notices (the request
is no longer possible, or the model left `/status/models`), waits `model_gone_grace` seconds for a worker
to come back, then cancels the request and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bot.clock import Clock
from bot.config import TextSettings
from bot.db.alchemy_text_jobs import JobRecord, JobRepository
from bot.errors import InvalidInputError, UserFacingError
from bot.hooks import Hook, Port
from bot.horde.alchemy import RequestAccepted
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError
from bot.horde.limits import (
    MAX_NAME_CHARS,
    MAX_REP_PEN,
    MAX_TEMPERATURE,
    MAX_TEXT_LENGTH,
    MAX_TOP_K,
    MAX_TOP_P,
    MIN_REP_PEN,
    MIN_TEMPERATURE,
    MIN_TEXT_LENGTH,
    MIN_TOP_K,
    MIN_TOP_P,
)
from bot.horde.pacer import Kind
from bot.horde.text import TextParams, TextRequest, TextStatus
from bot.scheduler import Scheduler
from bot.services import validation
from bot.services.info import InfoService
from bot.services.jobs.engine import REQUEST_LIFETIME, Check, Flight
from bot.services.jobs.held import JobOutcome
from bot.services.jobs.replies import ReplyTokens
from bot.services.jobs.stored import StoredJobs, StoredJobService
from bot.services.sharedkeys import ResolvedKey, SharedKeyService

if TYPE_CHECKING:
    from bot.services.safety import SafetyService

log = logging.getLogger(__name__)

KIND = "text"
MAX_PROMPT_CHARS = 6000  # a slash-command string option holds at most 6000 characters


class TextPayload(BaseModel):
    prompt: str
    model: str | None = None
    max_length: int
    public: bool = True
    chat_session_id: int | None = None
    stop_names: list[str] = []


@dataclass
class TextOutcome(JobOutcome[JobRecord]):
    prompt: str
    model: str | None
    public: bool
    chat_session_id: int | None
    text: str | None = None
    worker_name: str | None = None
    error: str | None = None
    exception: BaseException | None = None  # the Horde's refusal of a request sent from the line

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TextOptions:
    """What a member may choose for one request (None: the default)."""

    model: str | None = None
    max_length: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    rep_pen: float | None = None


def check_text_options(options: TextOptions) -> TextOptions:
    """The member's choices within the Horde's limits (`bot.horde.limits`), the model name tidied; raises
    InvalidInputError naming the option. NaN, infinities and text in a number option are refused here,
    before a job row exists (a NaN can't even be sent: it is not JSON)."""

    def optional(value: float | None, name: str, low: float, high: float) -> float | None:
        return None if value is None else validation.number(value, name, low, high)

    max_length = options.max_length
    if max_length is not None:
        max_length = validation.integer(max_length, "max_length", MIN_TEXT_LENGTH, MAX_TEXT_LENGTH)
    top_k = options.top_k
    if top_k is not None:
        top_k = validation.integer(top_k, "top_k", MIN_TOP_K, MAX_TOP_K)
    return TextOptions(
        model=validation.text(options.model, "model", max_chars=MAX_NAME_CHARS, single_line=True),
        max_length=max_length,
        temperature=optional(options.temperature, "temperature", MIN_TEMPERATURE, MAX_TEMPERATURE),
        top_p=optional(options.top_p, "top_p", MIN_TOP_P, MAX_TOP_P),
        top_k=top_k,
        rep_pen=optional(options.rep_pen, "rep_pen", MIN_REP_PEN, MAX_REP_PEN),
    )


OutcomeHook = Callable[[TextOutcome], Awaitable[None]]
MODEL_GONE = (
    "No worker serves {name} any more (it went offline while your request waited), so the request was "
    "cancelled. Pick another model; the suggestions list those online."
)


async def _undelivered(outcome: TextOutcome) -> None:
    log.warning("text job %s finished but nothing delivers results", outcome.job_id)


class TextJobs(StoredJobs[TextRequest]):
    """The `JobAdapter` of /text and /chat jobs (`bot.services.jobs.engine`)."""

    kind: Kind = "text"
    name = KIND

    def __init__(
        self,
        jobs: JobRepository,
        horde: HordeClient,
        info: InfoService,
        keys: SharedKeyService,
        clock: Clock,
        settings: TextSettings,
        safety: SafetyService | None,
        replies: ReplyTokens | None = None,
    ) -> None:
        super().__init__(jobs, keys, clock, replies)
        self._horde = horde
        self._info = info
        self._safety = safety
        self.settings = settings
        # Told, in order, of every finished job before it is delivered (the factory subscribes /chat,
        # which records the model's reply here).
        self.before_deliver: Hook[[TextOutcome], None] = Hook("text.before_deliver")
        # Plugged in by the Discord layer: shows the outcome.
        self.deliver: Port[OutcomeHook] = Port("text.deliver", _undelivered)

    async def pending(self, job: JobRecord, request: TextRequest) -> dict[str, Any]:
        return request.model_dump(exclude_none=True)

    async def rebuild(self, job: JobRecord) -> tuple[TextRequest, ResolvedKey]:
        pending = job.payload.get("pending")
        if not isinstance(pending, dict):
            raise UserFacingError("This request could not be sent after a restart. Please try again.")
        return TextRequest.model_validate(pending), await self._keys.resolve(job.user_id, job.guild_id)

    async def post(self, request: TextRequest, resolved: ResolvedKey) -> RequestAccepted:
        return await self._horde.generate_text(request, resolved.key, acquired=True)

    async def refused(
        self, job: JobRecord, request: TextRequest, resolved: ResolvedKey, exc: HordeError
    ) -> None:
        if self._safety is not None and exc.rc in ("CorruptPrompt", "TimeoutIP"):
            await self._safety.on_horde_rejection(
                guild_id=job.guild_id,
                user_id=job.user_id,
                prompt=request.prompt,
                negative=None,
                rc=exc.rc,
                retry_after=exc.retry_after,
            )
        await self._keys.handle_horde_error(exc, resolved, job.guild_id)

    async def check(self, job: JobRecord) -> Check:
        assert job.horde_id is not None
        return Check.of(await self._horde.text_status(job.horde_id))

    def estimate(self, check: Check) -> float:
        return self.settings.poll_interval

    async def give_up(self, job: JobRecord, check: Check, flight: Flight) -> tuple[str, str] | None:
        """The model left (after `model_gone_grace`), or no worker answered before the deadline."""
        payload = TextPayload.model_validate(job.payload)
        if await self._model_gone(payload, check.raw, flight):
            name = f"`{payload.model}`" if payload.model else "the model"
            return "failed", MODEL_GONE.format(name=name)
        if self.past_deadline(job):
            return "expired", "No worker answered in time. Please try again later."
        return None

    async def _model_gone(self, payload: TextPayload, status: TextStatus, flight: Flight) -> bool:
        gone = not status.is_possible
        if not gone and payload.model and status.processing == 0:
            served = {m.name for m in await self._info.models("text")}
            gone = payload.model not in served
        if not gone:
            flight.trouble_since = None
            return False
        now = self._clock.monotonic()
        if flight.trouble_since is None:
            flight.trouble_since = now
        return now - flight.trouble_since >= self.settings.model_gone_grace

    async def cancel_remote(self, job: JobRecord) -> TextStatus:
        assert job.horde_id is not None
        return await self._horde.cancel_text(job.horde_id)

    async def cancelled(self, job: JobRecord, answer: TextStatus) -> None:
        await self.end(job, "cancelled", "Cancelled.")

    async def complete(self, job: JobRecord, check: Check) -> float | None:
        payload = TextPayload.model_validate(job.payload)
        status: TextStatus = check.raw
        outcome = self._outcome(job, payload)
        usable = [g for g in status.generations if not g.censored]
        if usable:
            generation = usable[0]
            outcome.text = clean_answer(generation.text, payload.stop_names)
            outcome.worker_name = generation.worker_name
            outcome.model = generation.model or payload.model
            if not outcome.text:
                outcome.error = "The model answered with nothing. Try again, or rephrase."
        elif status.generations:
            outcome.error = (
                "The worker's answer was withheld by the AI Horde's safety filter. Rephrase your prompt "
                "and try again."
            )
        else:
            outcome.error = "The AI Horde's workers failed on this request. Please try again."
        if not await self.delivering(job):
            return None  # another process took the job over: it delivers
        await self.hand_over(outcome)
        await self.ended(
            job,
            "done" if outcome.ok else "failed",
            result={"worker": outcome.worker_name, "model": outcome.model} if outcome.ok else None,
            error=outcome.error,
        )
        return None

    def _outcome(self, record: JobRecord, payload: TextPayload) -> TextOutcome:
        return TextOutcome(
            job=record,
            prompt=payload.prompt,
            model=payload.model,
            public=payload.public,
            chat_session_id=payload.chat_session_id,
            reply=self.reply(record),
        )

    def outcome_of(self, job: JobRecord) -> Any:
        return self._outcome(job, TextPayload.model_validate(job.payload))

    async def hand_over(self, outcome: TextOutcome) -> None:
        if not outcome.again:
            # A reply delivered again was (or wasn't) recorded by the stopped process: never twice.
            await self.before_deliver.emit(outcome)
        await self.deliver.get()(outcome)


class TextService(StoredJobService[TextRequest]):
    def __init__(
        self,
        jobs: JobRepository,
        horde: HordeClient,
        info: InfoService,
        keys: SharedKeyService,
        scheduler: Scheduler,
        clock: Clock,
        settings: TextSettings,
        *,
        tick: float = 1.0,
        takeovers: Hook[[], object] | None = None,
        safety: SafetyService | None = None,
        replies: ReplyTokens | None = None,
    ) -> None:
        self._info = info
        self._keys = keys
        self._clock = clock
        self._safety = safety
        self.settings = settings
        self.adapter = TextJobs(jobs, horde, info, keys, clock, settings, safety, replies)
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
        # subscribes /chat.
        self.before_deliver: Hook[[TextOutcome], None] = self.adapter.before_deliver
        self.deliver: Port[OutcomeHook] = self.adapter.deliver

    async def model_names(self, search: str = "") -> list[str]:
        return await self._info.model_suggestions(search, ("text",))

    async def check_model(self, model: str) -> int:
        """The model's worker count; a clear error if no worker serves it right now."""
        served = {m.name: m.count for m in await self._info.models("text")}
        if model not in served:
            matches = [name for name in served if model.casefold() in name.casefold()]
            hint = f" Did you mean `{matches[0]}`?" if len(matches) == 1 else ""
            raise UserFacingError(
                f"No worker serves the text model `{model[:100]}` right now.{hint} "
                "Pick one from the suggestions (`/models type:text` lists them)."
            )
        return served[model]

    async def submit(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        prompt: str,
        options: TextOptions,
        public: bool = True,
        chat_session_id: int | None = None,
        stop_names: list[str] | None = None,
        max_context_length: int | None = None,
    ) -> int:
        # Every value first: nothing is asked of the Horde or stored for a request that can't be sent.
        options = check_text_options(options)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("The prompt is empty.")
        prompt = validation.text(prompt, "prompt", max_chars=len(prompt)) or ""
        if chat_session_id is None and len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(f"The prompt may have at most {MAX_PROMPT_CHARS} characters.")
        if self._safety is not None:
            # Before anything reaches the Horde: the bot's IP pause, the member's cooldown, the filter.
            await self._safety.check_horde_available()
            await self._safety.check_prompt(
                guild_id=guild_id, user_id=user_id, prompt=prompt, channel_id=channel_id
            )
        max_length = options.max_length or self.settings.default_max_length
        context = max_context_length or self.settings.default_max_context_length
        if options.model:
            await self.check_model(options.model)
            limits = await self._info.text_model_limits(options.model)
            if limits is not None:
                if options.max_length is not None and options.max_length > limits.max_length:
                    raise InvalidInputError(
                        f"The workers serving `{options.model}` write at most {limits.max_length} tokens "
                        "per answer: lower `max_length`."
                    )
                max_length = min(max_length, limits.max_length)
                context = min(context, limits.max_context_length)
        resolved = await self._keys.resolve(user_id, guild_id)
        if (
            resolved.shared is not None
            and resolved.shared.max_text_tokens != -1
            and options.max_length is None
        ):
            max_length = min(max_length, resolved.shared.max_text_tokens)
        self._keys.check_text(resolved, max_length)
        max_length = max(16, max_length)
        context = max(context, max_length + 64, 80)
        stops = [f"\n{name}:" for name in (stop_names or [])][:16]
        request = TextRequest(
            prompt=prompt,
            params=TextParams(
                max_length=max_length,
                max_context_length=context,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                rep_pen=options.rep_pen,
                stop_sequence=stops or None,
                frmttriminc=True if chat_session_id is not None else None,
            ),
            models=[options.model] if options.model else [],
        )
        payload = TextPayload(
            prompt=prompt if chat_session_id is None else "",
            model=options.model,
            max_length=max_length,
            public=public,
            chat_session_id=chat_session_id,
            stop_names=list(stop_names or []),
        )
        now = self._clock.now()
        record = await self._jobs.create(
            kind=KIND,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            payload=payload.model_dump(),
            key_source=resolved.source,
            now=now,
            deadline_at=now + timedelta(seconds=REQUEST_LIFETIME + 60),
        )
        # Sent now, or in line with its place shown (a refusal of a request sent now is raised here).
        await self.engine.start(record, request, resolved)
        return record.id

    async def active_chat_job(self, chat_session_id: int) -> int | None:
        for record in self.engine.jobs():
            if record.payload.get("chat_session_id") == chat_session_id:
                return record.id
        return None


def clean_answer(text: str, stop_names: list[str]) -> str:
    """Cut the answer where the model starts writing someone else's line (stop sequences are kept)."""
    cut = len(text)
    for name in stop_names:
        index = text.find(f"\n{name}:")
        if index != -1:
            cut = min(cut, index)
    return text[:cut].strip()


def split_for_discord(text: str, limit: int = 2000) -> list[str]:
    """Split on paragraph, line or word boundaries into chunks of at most `limit` characters."""
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), -1)
        if cut < limit // 2:
            cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks
