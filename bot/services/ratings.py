"""Image ratings: members rate images for the open aesthetic datasets and their own shared generations.

Rules:
- Only linked members rate: the member's key earns the kudos. A key the service rejects is reported.
- An image is served to one member (or to a channel for a rating party) and remembered in the database;
  only that member's clicks count, and each member's rating of an image is submitted exactly once
  (`bot.db.ratings` holds the state machine; this module never decides "once" in memory).
- The image is downloaded and attached, never linked: the service's URLs may be signed and expire, and an
  image the bot cannot fetch is skipped before anyone is asked to rate it.
- A submission that fails because the service is down, slow or rate-limiting is kept and retried in the
  background with growing delays; anything else (unknown image, revoked key, refusal) is reported at once.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from PIL import Image, UnidentifiedImageError

from bot.clock import Clock
from bot.config import RatingsSettings, Settings
from bot.db.ratings import (
    CHOOSING,
    FAILED,
    IMAGE_OPEN,
    OPEN,
    RETRYING,
    SUBMITTED,
    SUBMITTING,  # noqa: F401 - the cog reads the states from here
    GenerationRatingRecord,
    ImageRecord,
    RatingsRepository,
    Totals,
    VoteRecord,
)
from bot.errors import InvalidInputError, NotLinkedError, PermissionDeniedError, UserFacingError
from bot.hooks import Hook
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.models import ApiKey
from bot.horde.ratings import ARTIFACT_LABELS as ARTIFACT_LABELS  # for cogs, which never import bot.horde
from bot.horde.ratings import (
    AestheticRating,
    AestheticsPayload,
    Dataset,
    RatingsClient,
    RatingsClientConfig,
    RatingSubmission,
)
from bot.scheduler import Scheduler
from bot.services import validation
from bot.services.accounts import AccountService
from bot.shards import ALL_SHARDS, ShardScope

log = logging.getLogger(__name__)
MAX_DATASET_CHARS = 100  # a dataset's id or name, as the /rate option declares

IMAGE_FORMATS = {"WEBP": "webp", "PNG": "png", "JPEG": "jpg", "GIF": "gif"}
# The Horde allows 5 calls per minute per request id on /generate/rate: never retry faster than this.
GENERATION_RETRY_SPACING = 12.0
TRANSIENT_AESTHETICS_RC = {"AestheticsServerDown", "AestheticsServerTimeout", "AestheticsServerError"}

NOT_YOURS = "These buttons belong to someone else. Use `/rate` to get an image of your own."
KEY_REJECTED = (
    "The ratings service rejected your API key (revoked or reset?). Link a valid key with `/login`."
)
UNKNOWN_IMAGE = (
    "The ratings service no longer knows this image (it was removed or has enough ratings), "
    "so your rating was not submitted."
)
STAYED_DOWN = "The ratings service stayed unreachable, so this rating could not be submitted."
SERVICE_DOWN = (
    "The ratings service is not reachable right now (down or too slow). Please try again in a few minutes."
)
ALREADY_DELIVERED = (
    "An earlier attempt reached the ratings service after all, so this rating counts once; "
    "the reward of that attempt is not known."
)
IMAGE_GONE = "This image is no longer available. Use `/rate` to get a new one."


def load_ratings_settings(settings: Settings) -> RatingsSettings:
    return settings.ratings


def client_config(settings: Settings, ratings: RatingsSettings) -> RatingsClientConfig:
    return RatingsClientConfig(
        base_url=settings.horde.ratings_url,
        timeout=ratings.timeout,
        max_retries=ratings.max_retries,
        backoff_base=settings.horde.backoff_base,
        backoff_cap=settings.horde.backoff_cap,
    )


# --- what the service hands to the Discord layer --------------------------------------------------------


@dataclass(frozen=True)
class ServedImage:
    row: ImageRecord
    data: bytes
    filename: str
    dataset: str | None  # a label for the embed, when known


@dataclass(frozen=True)
class Choice:
    vote: VoteRecord
    created: bool  # False: the member had already chosen (a double click, or a second click on a party)


@dataclass(frozen=True)
class SubmitOutcome:
    vote: VoteRecord
    won: bool  # False: another click is (or was) submitting this rating; nothing was sent again


@dataclass(frozen=True)
class PartySummary:
    row: ImageRecord
    counts: dict[int, int]
    raters: int
    submitted: int

    @property
    def average(self) -> float | None:
        total = sum(self.counts.values())
        if not total:
            return None
        return sum(value * count for value, count in self.counts.items()) / total


@dataclass(frozen=True)
class GenerationStep:
    """Where a member is in rating their own request: `phase` is rating, artifacts or done."""

    record: GenerationRatingRecord
    phase: str
    position: int

    @property
    def total(self) -> int:
        return len(self.record.items)


@dataclass(frozen=True)
class RatingStats:
    member: Totals
    guild: Totals


@dataclass
class _DatasetCache:
    items: list[Dataset] = field(default_factory=list)
    fetched_at: float | None = None
    failed_at: float | None = None


def probe_image(data: bytes) -> str:
    """The file extension for an image the service sent; raises ValueError if it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError("not a readable image") from exc
    if fmt not in IMAGE_FORMATS or width < 1 or height < 1:
        raise ValueError(f"unsupported image ({fmt or 'unknown'})")
    return IMAGE_FORMATS[fmt]


def _rejected_key(exc: HordeError) -> bool:
    return exc.status in (401, 403) or exc.rc == "InvalidAPIKey"


class RatingsService:
    def __init__(
        self,
        repo: RatingsRepository,
        client: RatingsClient,
        accounts: AccountService,
        scheduler: Scheduler,
        clock: Clock,
        settings: RatingsSettings,
        *,
        shards: ShardScope = ALL_SHARDS,
    ) -> None:
        self._repo = repo
        self._shards = shards
        self._client = client
        self._accounts = accounts
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self._datasets = _DatasetCache()
        # Background retries: ("vote"|"gen", row id) -> monotonic due time. The rows themselves are in the
        # database (state `retrying`), so a restart picks them up again in `start`.
        self._due: dict[tuple[str, int], float] = {}
        self._started = False
        # Telling the member is best effort (a listener that fails is logged): the outcome is in the
        # database either way.
        self.on_vote_settled: Hook[[VoteRecord], None] = Hook("ratings.on_vote_settled")
        self.on_generation_settled: Hook[[GenerationRatingRecord], None] = Hook(
            "ratings.on_generation_settled"
        )
        self.on_party_closed: Hook[[PartySummary], None] = Hook("ratings.on_party_closed")

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume after a (re)start: requeue unfinished submissions, reschedule open parties."""
        if self._started:
            return
        self._started = True
        await self.resume()
        for party in await self._repo.open_parties():
            # Another process's server: that process ends (and posts) its rating party.
            if self._shards.owns(party.guild_id):
                self._schedule_party_end(party)
        self._scheduler.every("ratings:retry", self.settings.retry_check_seconds, self.process_due)

    async def resume(self) -> None:
        """Take the unfinished submissions nobody else holds (this process's after a restart, a dead
        process's when the lease keeper tells: the factory subscribes this for the bot's life) and retry
        them now."""
        now = self._clock.monotonic()
        votes, generations = await self._repo.claim_unfinished(self._clock.now())
        for vote_id in votes:
            # Nothing of these is in flight here: a `submitting` row was cut off by a crash.
            await self._repo.requeue_vote(vote_id)
            self._due[("vote", vote_id)] = now
        for rating_id in generations:
            await self._repo.requeue_generation(rating_id)
            self._due[("gen", rating_id)] = now

    async def forget_member(self, discord_id: int) -> None:
        """Unlink hook (wired in `bot.app`): delete the member's ratings."""
        await self._repo.forget_member(discord_id)

    # --- datasets ---------------------------------------------------------------------------------------

    def _fresh(self) -> bool:
        fetched = self._datasets.fetched_at
        return (
            fetched is not None and self._clock.monotonic() - fetched < self.settings.datasets_cache_seconds
        )

    async def _fetch_datasets(self, time_limit: float | None) -> list[Dataset]:
        try:
            items = await self._client.datasets(time_limit=time_limit)
        except HordeError:
            self._datasets.failed_at = self._clock.monotonic()
            raise
        self._datasets = _DatasetCache(items=items, fetched_at=self._clock.monotonic())
        return items

    async def datasets(self) -> list[Dataset]:
        """The service's datasets, cached (they change rarely); a stale list beats none."""
        if self._fresh():
            return list(self._datasets.items)
        try:
            return await self._fetch_datasets(None)
        except HordeError:
            if self._datasets.items:
                return list(self._datasets.items)
            raise

    async def dataset_choices(self, current: str, limit: int = 25) -> list[Dataset]:
        """For autocomplete: never raises and never waits long (Discord gives 3 s, with no defer)."""
        items = self._datasets.items
        if not self._fresh():
            failed = self._datasets.failed_at
            recently_failed = failed is not None and self._clock.monotonic() - failed < 30
            if not recently_failed:
                try:
                    items = await self._fetch_datasets(self.settings.autocomplete_timeout)
                except HordeError as exc:
                    log.info("dataset list unavailable for autocomplete: %s", exc.message)
        needle = current.strip().casefold()
        matches = [d for d in items if needle in d.label.casefold() or needle == d.id.casefold()]
        return matches[:limit]

    async def resolve_dataset(self, value: str | None) -> Dataset | None:
        wanted = validation.text(value, "dataset", max_chars=MAX_DATASET_CHARS, single_line=True)
        if wanted is None:
            return None
        try:
            items = await self.datasets()
        except HordeUnavailable:
            raise UserFacingError(SERVICE_DOWN) from None
        except HordeError as exc:
            raise UserFacingError(f"The ratings service refused the dataset list: {exc.message}") from None
        for dataset in items:
            if dataset.id == wanted:
                return dataset
        for dataset in items:
            if dataset.label.casefold() == wanted.casefold():
                return dataset
        raise InvalidInputError(
            f"There is no dataset called {validation.quoted(wanted)}. Pick one from the list."
        )

    # --- serving images ---------------------------------------------------------------------------------

    async def _key(self, discord_id: int) -> ApiKey:
        return await self._accounts.require_key(discord_id)

    async def serve(
        self, *, guild_id: int | None, channel_id: int | None, discord_id: int, dataset: str | None
    ) -> ServedImage:
        """`/rate`: an image for this member, downloaded, remembered as served to them."""
        key = await self._key(discord_id)
        chosen = await self.resolve_dataset(dataset)
        return await self._serve(
            key,
            guild_id=guild_id,
            channel_id=channel_id,
            owner_id=discord_id,
            requested=chosen.id if chosen else None,
            label=chosen.label if chosen else None,
        )

    async def next_image(self, image_row_id: int, discord_id: int) -> ServedImage | None:
        """The Next image and Skip buttons: None if another click already moved on from this image."""
        row = await self._repo.get_image(image_row_id)
        if row is None or row.is_party:
            raise UserFacingError(IMAGE_GONE)
        if row.owner_id != discord_id:
            raise PermissionDeniedError(NOT_YOURS)
        key = await self._key(discord_id)
        if not await self._repo.move_on(image_row_id):
            return None
        try:
            label = None
            if row.requested_dataset:
                label = next(
                    (d.label for d in self._datasets.items if d.id == row.requested_dataset),
                    row.requested_dataset,
                )
            return await self._serve(
                key,
                guild_id=row.guild_id,
                channel_id=row.channel_id,
                owner_id=discord_id,
                requested=row.requested_dataset,
                label=label,
            )
        except BaseException:
            # Nothing new was shown: the member can press the same button again.
            await self._repo.reopen(image_row_id)
            raise

    async def _serve(
        self,
        key: ApiKey,
        *,
        guild_id: int | None,
        channel_id: int | None,
        owner_id: int,
        requested: str | None,
        label: str | None,
        is_party: bool = False,
    ) -> ServedImage:
        for _ in range(self.settings.serve_attempts):
            try:
                image = await self._client.new_image(key, dataset_id=requested)
            except HordeError as exc:
                raise self._serve_error(exc, dataset_chosen=requested is not None) from None
            try:
                downloaded = await self._client.download_image(
                    image.url, max_bytes=self.settings.max_image_bytes
                )
                extension = probe_image(downloaded.data)
            except (HordeError, ValueError) as exc:
                # A dead or broken image: skip it rather than ask anyone to rate what they can't see.
                log.warning("skipped ratings image %s: %s", image.id, exc)
                continue
            now = self._clock.now()
            row = await self._repo.add_image(
                guild_id=guild_id,
                channel_id=channel_id,
                owner_id=owner_id,
                image_id=image.id,
                dataset_id=image.dataset_id,
                requested_dataset=requested,
                now=now,
                is_party=is_party,
                ends_at=now + timedelta(seconds=self.settings.party_seconds) if is_party else None,
            )
            return ServedImage(
                row=row,
                data=downloaded.data,
                filename=f"rating-{row.id}.{extension}",
                dataset=label,
            )
        raise UserFacingError(
            "The ratings service's images could not be loaded right now. Please try again in a few minutes."
        )

    @staticmethod
    def _serve_error(exc: HordeError, *, dataset_chosen: bool) -> UserFacingError:
        if isinstance(exc, HordeUnavailable):
            return UserFacingError(SERVICE_DOWN)
        if _rejected_key(exc):
            return UserFacingError(KEY_REJECTED)
        if exc.status == 404:
            where = " in that dataset" if dataset_chosen else ""
            return UserFacingError(
                f"The ratings service has no image left to rate{where} right now. Please come back later."
            )
        if exc.status == 429:
            wait = f" in {int(exc.retry_after) + 1} s" if exc.retry_after else " in a minute"
            return UserFacingError(f"The ratings service is rate-limiting this bot. Please try again{wait}.")
        return UserFacingError(f"The ratings service refused: {exc.message[:300]}")

    # --- rating: aesthetic step ----------------------------------------------------------------------------

    async def choose(self, image_row_id: int, discord_id: int, rating: int) -> Choice:
        """The aesthetic rating (1-10). The first click creates the member's vote; later ones find it."""
        if not 1 <= rating <= 10:
            raise InvalidInputError("A rating is a number from 1 to 10.")
        row = await self._repo.get_image(image_row_id)
        if row is None:
            raise UserFacingError(IMAGE_GONE)
        if row.is_party:
            if row.state != IMAGE_OPEN:
                raise UserFacingError("This rating party has ended.")
            await self._key(discord_id)  # only linked members; the key earns their kudos
        elif row.owner_id != discord_id:
            raise PermissionDeniedError(NOT_YOURS)
        existing = await self._repo.get_vote_for(image_row_id, discord_id)
        if existing is not None:
            return Choice(existing, created=False)
        if not row.is_party and row.state != IMAGE_OPEN:
            raise UserFacingError("You already moved on from this image.")
        vote = await self._repo.create_vote(
            image_row_id=image_row_id,
            guild_id=row.guild_id,
            discord_id=discord_id,
            rating=rating,
            now=self._clock.now(),
        )
        if vote is None:
            # Another click of the same member inserted first (the unique constraint decided).
            again = await self._repo.get_vote_for(image_row_id, discord_id)
            if again is None:
                raise UserFacingError(IMAGE_GONE)
            return Choice(again, created=False)
        return Choice(vote, created=True)

    async def vote(self, vote_id: int, discord_id: int) -> VoteRecord:
        vote = await self._repo.get_vote(vote_id)
        if vote is None:
            raise UserFacingError(IMAGE_GONE)
        if vote.discord_id != discord_id:
            raise PermissionDeniedError(NOT_YOURS)
        return vote

    async def image(self, image_row_id: int) -> ImageRecord | None:
        return await self._repo.get_image(image_row_id)

    # --- rating: artifacts step and submission --------------------------------------------------------------

    async def submit(self, vote_id: int, discord_id: int, artifacts: int) -> SubmitOutcome:
        """The artifacts rating (0-5), then the one submission to the service."""
        if not 0 <= artifacts <= 5:
            raise InvalidInputError("The flaws rating is a number from 0 to 5.")
        await self.vote(vote_id, discord_id)
        if not await self._repo.claim_vote(vote_id, [CHOOSING], self._clock.now(), artifacts=artifacts):
            current = await self.vote(vote_id, discord_id)
            return SubmitOutcome(current, won=False)
        return SubmitOutcome(await self._attempt_vote(vote_id), won=True)

    async def _attempt_vote(self, vote_id: int) -> VoteRecord:
        """Send a claimed (`submitting`) vote. Returns it in its new state."""
        vote = await self._repo.get_vote(vote_id)
        assert vote is not None
        image = await self._repo.get_image(vote.image_row_id)
        key = await self._accounts.api_key(vote.discord_id)
        if image is None:
            return await self._finish_vote(vote, FAILED, error=IMAGE_GONE)
        if key is None:
            return await self._finish_vote(vote, FAILED, error=NotLinkedError().message)
        try:
            result = await self._client.rate(
                key, image.image_id, RatingSubmission(rating=vote.rating, artifacts=vote.artifacts)
            )
        except HordeError as exc:
            transient = isinstance(exc, HordeUnavailable) or exc.status == 429
            if vote.attempts > 1 and exc.status == 400 and "already" in exc.message.lower():
                # An earlier attempt timed out on our side but reached the service: it is delivered,
                # and we don't know what it paid.
                return await self._finish_vote(vote, SUBMITTED, error=ALREADY_DELIVERED)
            if transient and vote.attempts < self.settings.submit_attempts:
                delay = self._retry_delay(vote.attempts, exc.retry_after)
                log.info(
                    "rating %s not delivered (%s); retry %d in %.0fs",
                    vote.id,
                    exc.message,
                    vote.attempts,
                    delay,
                )
                settled = await self._finish_vote(vote, RETRYING, error=exc.message)
                self._due[("vote", vote.id)] = self._clock.monotonic() + delay
                return settled
            return await self._finish_vote(vote, FAILED, error=self._vote_error(exc, transient))
        log.info("rating %s submitted (reward %s)", vote.id, result.reward)
        return await self._finish_vote(vote, SUBMITTED, reward=result.reward)

    async def _finish_vote(
        self, vote: VoteRecord, state: str, *, reward: float | None = None, error: str | None = None
    ) -> VoteRecord:
        finished = await self._repo.finish_vote(vote.id, state, self._clock.now(), reward=reward, error=error)
        return finished if finished is not None else vote

    @staticmethod
    def _vote_error(exc: HordeError, transient: bool) -> str:
        if transient:
            if exc.status == 429:
                return (
                    "The ratings service kept rate-limiting the bot, so this rating could not be submitted."
                )
            return STAYED_DOWN
        if _rejected_key(exc):
            return KEY_REJECTED + " This rating was not submitted."
        if exc.status == 404:
            return UNKNOWN_IMAGE
        return f"The ratings service refused this rating: {exc.message[:300]}"

    def _retry_delay(self, attempts: int, retry_after: float | None, floor: float = 0.0) -> float:
        base = self.settings.retry_base_seconds * (2 ** max(0, attempts - 1))
        delay = random.uniform(base * 0.75, base)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(delay, floor)

    def retry_eta(self, kind: str, row_id: int) -> float | None:
        """Seconds until the next background attempt, if one is queued."""
        due = self._due.get((kind, row_id))
        return None if due is None else max(0.0, due - self._clock.monotonic())

    async def process_due(self) -> None:
        """Scheduler job: retry every submission whose time has come."""
        now = self._clock.monotonic()
        for (kind, row_id), due in sorted(self._due.items(), key=lambda item: item[1]):
            if due > now:
                continue
            self._due.pop((kind, row_id), None)
            if kind == "vote":
                if not await self._repo.claim_vote(row_id, [RETRYING], self._clock.now()):
                    continue
                vote = await self._attempt_vote(row_id)
                if vote.state in (SUBMITTED, FAILED):
                    await self.on_vote_settled.emit(vote)
            else:
                if not await self._repo.claim_generation(row_id, [RETRYING], self._clock.now()):
                    continue
                record = await self._attempt_generation(row_id)
                if record is not None and record.state in (SUBMITTED, FAILED):
                    await self.on_generation_settled.emit(record)

    # --- rating parties ---------------------------------------------------------------------------------

    async def start_party(
        self, *, guild_id: int, channel_id: int, discord_id: int, dataset: str | None
    ) -> ServedImage:
        key = await self._key(discord_id)
        running = await self._repo.open_party_in_channel(channel_id)
        if running is not None:
            raise UserFacingError("A rating party is already running in this channel. Join that one!")
        chosen = await self.resolve_dataset(dataset)
        served = await self._serve(
            key,
            guild_id=guild_id,
            channel_id=channel_id,
            owner_id=discord_id,
            requested=chosen.id if chosen else None,
            label=chosen.label if chosen else None,
            is_party=True,
        )
        self._schedule_party_end(served.row)
        return served

    async def set_party_message(self, image_row_id: int, message_id: int) -> None:
        await self._repo.set_message(image_row_id, message_id)

    def _schedule_party_end(self, row: ImageRecord) -> None:
        remaining = self.settings.party_seconds
        if row.ends_at is not None:
            remaining = max(0.0, (row.ends_at - self._clock.now()).total_seconds())

        async def end() -> None:
            await self.end_party(row.id)

        self._scheduler.call_later(f"ratings:party:{row.id}", remaining, end)

    async def end_party(self, image_row_id: int) -> PartySummary | None:
        """Close a party (once) and tell listeners the distribution of its ratings."""
        if not await self._repo.close_party(image_row_id):
            return None
        row = await self._repo.get_image(image_row_id)
        assert row is not None
        votes = await self._repo.votes_for_image(image_row_id)
        counts = {value: 0 for value in range(1, 11)}
        for vote in votes:
            if vote.state != FAILED:
                counts[vote.rating] += 1
        summary = PartySummary(
            row=row,
            counts=counts,
            raters=sum(counts.values()),
            submitted=sum(1 for vote in votes if vote.state == SUBMITTED),
        )
        log.info("rating party %s ended: %d raters", image_row_id, summary.raters)
        await self.on_party_closed.emit(summary)
        return summary

    # --- rating one's own shared generation -----------------------------------------------------------

    async def offer_generation_rating(
        self,
        *,
        guild_id: int | None,
        discord_id: int,
        request_id: str,
        generation_ids: Sequence[str],
        shared: bool,
    ) -> int | None:
        """Called by the generation feature when a request finishes. Returns the id to put on a Rate button,
        or None when there must be no button (the Horde did not share the request, or no image has an id).

        Call it only for requests made with the member's own linked key: the rating must be sent with it.
        """
        ids = [g for g in generation_ids if isinstance(g, str) and len(g) == 36]
        if not shared or not ids or len(ids) != len(generation_ids):
            return None
        record = await self._repo.add_generation(
            guild_id=guild_id,
            discord_id=discord_id,
            request_id=request_id,
            generation_ids=ids,
            now=self._clock.now(),
        )
        return record.id

    async def _generation(self, rating_id: int, discord_id: int) -> GenerationRatingRecord:
        record = await self._repo.get_generation(rating_id)
        if record is None:
            raise UserFacingError("These images can no longer be rated.")
        if record.discord_id != discord_id:
            raise PermissionDeniedError("Only the member who made these images can rate them.")
        return record

    @staticmethod
    def _step(record: GenerationRatingRecord) -> GenerationStep:
        if record.state == OPEN:
            for item in record.items:
                if item.rating is None:
                    return GenerationStep(record, "rating", item.position)
                if item.artifacts is None:
                    return GenerationStep(record, "artifacts", item.position)
        return GenerationStep(record, "done", len(record.items) - 1)

    async def begin_generation_rating(
        self, rating_id: int, discord_id: int, preview_urls: Sequence[str] = ()
    ) -> GenerationStep:
        """The Rate button: where the member is in the flow; an error once the Horde forgot the request."""
        record = await self._generation(rating_id, discord_id)
        await self._key(discord_id)
        if record.state == OPEN:
            created = await self._repo.generation_created_at(rating_id)
            if created is not None:
                age = (self._clock.now() - created).total_seconds()
                if age > self.settings.generation_window_seconds:
                    raise UserFacingError(
                        "These images are too old to rate: the AI Horde forgets a request about 20 minutes "
                        "after it finishes."
                    )
            if preview_urls and not record.preview_urls:
                await self._repo.set_preview_urls(rating_id, list(preview_urls))
                record = await self._generation(rating_id, discord_id)
        return self._step(record)

    async def choose_generation_rating(
        self, rating_id: int, discord_id: int, position: int, rating: int
    ) -> GenerationStep | None:
        if not 1 <= rating <= 10:
            raise InvalidInputError("A rating is a number from 1 to 10.")
        await self._generation(rating_id, discord_id)
        if not await self._repo.set_item_rating(rating_id, position, rating):
            return None
        return self._step(await self._generation(rating_id, discord_id))

    async def choose_generation_artifacts(
        self, rating_id: int, discord_id: int, position: int, artifacts: int
    ) -> GenerationStep | None:
        """The flaws rating of one image; after the last image, the one submission to the Horde."""
        if not 0 <= artifacts <= 5:
            raise InvalidInputError("The flaws rating is a number from 0 to 5.")
        await self._generation(rating_id, discord_id)
        if not await self._repo.set_item_artifacts(rating_id, position, artifacts):
            return None
        step = self._step(await self._generation(rating_id, discord_id))
        if step.phase != "done":
            return step
        if not await self._repo.claim_generation(rating_id, [OPEN], self._clock.now()):
            return None
        record = await self._attempt_generation(rating_id)
        return self._step(record) if record is not None else None

    async def _attempt_generation(self, rating_id: int) -> GenerationRatingRecord | None:
        record = await self._repo.get_generation(rating_id)
        if record is None:
            return None
        key = await self._accounts.api_key(record.discord_id)
        if key is None:
            return await self._repo.finish_generation(
                rating_id, FAILED, self._clock.now(), error=NotLinkedError().message
            )
        ratings = [
            AestheticRating(id=item.generation_id, rating=item.rating, artifacts=item.artifacts)
            for item in record.items
            if item.rating is not None
        ]
        best = None
        if len(ratings) >= 2:
            best = min(ratings, key=lambda r: (-r.rating, r.artifacts if r.artifacts is not None else 9)).id
        try:
            result = await self._client.rate_generation(
                key, record.request_id, AestheticsPayload(best=best, ratings=ratings)
            )
        except HordeError as exc:
            if exc.rc == "AestheticsAlreadyExist" and record.attempts > 1:
                # An earlier attempt timed out on our side but reached the Horde.
                return await self._repo.finish_generation(rating_id, SUBMITTED, self._clock.now(), reward=0.0)
            transient = (
                isinstance(exc, HordeUnavailable) or exc.is_rate_limit or exc.rc in TRANSIENT_AESTHETICS_RC
            )
            if transient and record.attempts < self.settings.submit_attempts:
                delay = self._retry_delay(record.attempts, exc.retry_after, floor=GENERATION_RETRY_SPACING)
                log.info(
                    "generation rating %s not delivered (%s); retry in %.0fs", rating_id, exc.message, delay
                )
                self._due[("gen", rating_id)] = self._clock.monotonic() + delay
                return await self._repo.finish_generation(
                    rating_id, RETRYING, self._clock.now(), error=exc.message
                )
            return await self._repo.finish_generation(
                rating_id, FAILED, self._clock.now(), error=self._generation_error(exc, transient)
            )
        log.info("generation rating %s submitted (reward %s)", rating_id, result.reward)
        return await self._repo.finish_generation(
            rating_id, SUBMITTED, self._clock.now(), reward=result.reward
        )

    @staticmethod
    def _generation_error(exc: HordeError, transient: bool) -> str:
        if transient:
            return "The AI Horde stayed unreachable, so your rating could not be submitted."
        if _rejected_key(exc):
            return KEY_REJECTED + " Your rating was not submitted."
        if exc.rc == "AestheticsAlreadyExist":
            return "These images were already rated."
        if exc.rc == "AestheticsNotPublic":
            return "The AI Horde did not share this request, so it can't be rated."
        if exc.status == 404 or exc.rc == "RequestNotFound":
            return "The AI Horde no longer has this request (it forgets requests soon after they finish)."
        return f"The AI Horde refused the rating: {exc.message[:300]}"

    # --- figures -------------------------------------------------------------------------------------------

    async def stats(self, *, guild_id: int | None, discord_id: int) -> RatingStats:
        return RatingStats(
            member=await self._repo.totals(guild_id=guild_id, discord_id=discord_id),
            guild=await self._repo.totals(guild_id=guild_id),
        )


def kudos_text(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "0"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}".rstrip("0").rstrip(".")
