"""Image ratings: what was served to whom, each member's rating, and ratings of one's own generations.

Exactly-once submission is enforced here, not in memory: a member's rating of an image is one row
(`UNIQUE(image_row_id, discord_id)`), and every step is a single conditional UPDATE that only one caller
can win (`... WHERE state = 'choosing'`), so ten clicks in a second, on one bot or after a restart,
still submit once.

Vote states: choosing → submitting → submitted | failed, or → retrying → submitting → ...
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.leases import Lease, LeaseColumns, LeasedRows, lease_index, process_holder
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

# Vote / generation-rating states.
CHOOSING = "choosing"
OPEN = "open"
SUBMITTING = "submitting"
RETRYING = "retrying"
SUBMITTED = "submitted"
FAILED = "failed"
# Image row states.
IMAGE_OPEN = "open"
IMAGE_MOVED_ON = "moved_on"
IMAGE_CLOSED = "closed"

ERROR_LIMIT = 400
log = logging.getLogger(__name__)


class RatingImageRow(Base):
    """An image from the ratings service shown to one member (`/rate`) or a channel (`/rate-party`)."""

    __tablename__ = "rating_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    is_party: Mapped[bool] = mapped_column(Boolean, default=False)
    image_id: Mapped[str] = mapped_column(String(100))
    dataset_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    requested_dataset: Mapped[str | None] = mapped_column(String(100), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=IMAGE_OPEN)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_rating_images_party_state", "is_party", "state"),)


class RatingVoteRow(LeaseColumns, Base):
    """One member's rating of one served image (while it is submitted or retried, held by one process:
    `bot.db.leases`)."""

    __tablename__ = "rating_votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_row_id: Mapped[int] = mapped_column(ForeignKey("rating_images.id", ondelete="CASCADE"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    discord_id: Mapped[int] = mapped_column(BigInteger)
    rating: Mapped[int] = mapped_column(Integer)
    artifacts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=CHOOSING)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(String(ERROR_LIMIT), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("image_row_id", "discord_id", name="uq_rating_votes_image_member"),
        Index("ix_rating_votes_guild_member", "guild_id", "discord_id"),
        Index("ix_rating_votes_state", "state"),
        lease_index("rating_votes"),
    )


class GenerationRatingRow(LeaseColumns, Base):
    """A member's rating of their own shared generation request (one submission per request; while it is
    submitted or retried, held by one process)."""

    __tablename__ = "generation_ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    discord_id: Mapped[int] = mapped_column(BigInteger)
    # A Horde request id is a capability: stored, never shown or put in a custom_id.
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=OPEN)
    preview_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(String(ERROR_LIMIT), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_generation_ratings_guild_member", "guild_id", "discord_id"),
        Index("ix_generation_ratings_state", "state"),
        lease_index("generation_ratings"),
    )


class GenerationRatingItemRow(Base):
    __tablename__ = "generation_rating_items"

    rating_id: Mapped[int] = mapped_column(
        ForeignKey("generation_ratings.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation_id: Mapped[str] = mapped_column(String(64))
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    artifacts: Mapped[int | None] = mapped_column(Integer, nullable=True)


# --- records handed to the service ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    id: int
    guild_id: int | None
    channel_id: int | None
    owner_id: int
    is_party: bool
    image_id: str
    dataset_id: str | None
    requested_dataset: str | None
    state: str
    message_id: int | None
    created_at: datetime
    ends_at: datetime | None


@dataclass(frozen=True)
class VoteRecord:
    id: int
    image_row_id: int
    guild_id: int | None
    discord_id: int
    rating: int
    artifacts: int | None
    state: str
    reward: float | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class GenerationItemRecord:
    position: int
    generation_id: str
    rating: int | None
    artifacts: int | None


@dataclass(frozen=True)
class GenerationRatingRecord:
    id: int
    guild_id: int | None
    discord_id: int
    request_id: str
    state: str
    preview_urls: tuple[str, ...]
    reward: float | None
    error: str | None
    attempts: int
    items: tuple[GenerationItemRecord, ...]


@dataclass(frozen=True)
class Totals:
    submitted: int = 0
    rewards: float = 0.0
    failures: int = 0
    pending: int = 0


def _image(row: RatingImageRow) -> ImageRecord:
    return ImageRecord(
        id=row.id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        owner_id=row.owner_id,
        is_party=row.is_party,
        image_id=row.image_id,
        dataset_id=row.dataset_id,
        requested_dataset=row.requested_dataset,
        state=row.state,
        message_id=row.message_id,
        created_at=row.created_at,
        ends_at=row.ends_at,
    )


def _vote(row: RatingVoteRow) -> VoteRecord:
    return VoteRecord(
        id=row.id,
        image_row_id=row.image_row_id,
        guild_id=row.guild_id,
        discord_id=row.discord_id,
        rating=row.rating,
        artifacts=row.artifacts,
        state=row.state,
        reward=row.reward,
        error=row.error,
        attempts=row.attempts,
    )


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:ERROR_LIMIT]


class RatingsRepository:
    # A /rate-party image stays for the channel; who started the party is forgotten (0).
    MEMBER_DATA = MemberData(
        forgets=("rating_votes.discord_id", "generation_ratings.discord_id", "rating_images.owner_id")
    )

    def __init__(self, db: Database, lease: Lease | None = None) -> None:
        self._db = db
        lease = lease or Lease(process_holder())
        vote_table, generation_table = RatingVoteRow.__table__, GenerationRatingRow.__table__
        assert isinstance(vote_table, Table) and isinstance(generation_table, Table)
        self.vote_leases = LeasedRows(db, vote_table, lease)
        self.generation_leases = LeasedRows(db, generation_table, lease)

    # --- served images ----------------------------------------------------------------------------------

    async def add_image(
        self,
        *,
        guild_id: int | None,
        channel_id: int | None,
        owner_id: int,
        image_id: str,
        dataset_id: str | None,
        requested_dataset: str | None,
        now: datetime,
        is_party: bool = False,
        ends_at: datetime | None = None,
    ) -> ImageRecord:
        async with self._db.session() as session:
            row = RatingImageRow(
                guild_id=guild_id,
                channel_id=channel_id,
                owner_id=owner_id,
                is_party=is_party,
                image_id=image_id,
                dataset_id=dataset_id,
                requested_dataset=requested_dataset,
                state=IMAGE_OPEN,
                created_at=now,
                ends_at=ends_at,
            )
            session.add(row)
            await session.flush()
            return _image(row)

    async def get_image(self, row_id: int) -> ImageRecord | None:
        async with self._db.session() as session:
            row = await session.get(RatingImageRow, row_id)
            return _image(row) if row is not None else None

    async def move_on(self, row_id: int) -> bool:
        """Leave a solo image for the next one. Only one caller wins (double-clicked "Next image")."""
        return await self._transition_image(row_id, IMAGE_OPEN, IMAGE_MOVED_ON, is_party=False)

    async def close_party(self, row_id: int) -> bool:
        return await self._transition_image(row_id, IMAGE_OPEN, IMAGE_CLOSED, is_party=True)

    async def _transition_image(self, row_id: int, old: str, new: str, *, is_party: bool) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                update(RatingImageRow)
                .where(
                    RatingImageRow.id == row_id,
                    RatingImageRow.state == old,
                    RatingImageRow.is_party.is_(is_party),
                )
                .values(state=new)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def reopen(self, row_id: int) -> None:
        """Undo `move_on` when the next image could not be served."""
        await self._transition_image(row_id, IMAGE_MOVED_ON, IMAGE_OPEN, is_party=False)

    async def set_message(self, row_id: int, message_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(RatingImageRow).where(RatingImageRow.id == row_id).values(message_id=message_id)
            )

    async def open_parties(self) -> list[ImageRecord]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(RatingImageRow).where(
                    RatingImageRow.is_party.is_(True), RatingImageRow.state == IMAGE_OPEN
                )
            )
            return [_image(row) for row in rows]

    async def open_party_in_channel(self, channel_id: int) -> ImageRecord | None:
        async with self._db.session() as session:
            row = await session.scalar(
                select(RatingImageRow)
                .where(
                    RatingImageRow.is_party.is_(True),
                    RatingImageRow.state == IMAGE_OPEN,
                    RatingImageRow.channel_id == channel_id,
                )
                .limit(1)
            )
            return _image(row) if row is not None else None

    # --- votes --------------------------------------------------------------------------------------------

    async def create_vote(
        self, *, image_row_id: int, guild_id: int | None, discord_id: int, rating: int, now: datetime
    ) -> VoteRecord | None:
        """The member's aesthetic rating; None if they already rated this image (the unique constraint)."""
        try:
            async with self._db.session() as session:
                row = RatingVoteRow(
                    image_row_id=image_row_id,
                    guild_id=guild_id,
                    discord_id=discord_id,
                    rating=rating,
                    state=CHOOSING,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                await session.flush()
                return _vote(row)
        except IntegrityError:
            log.debug("member %s already rated image row %s", discord_id, image_row_id)
            return None

    async def get_vote(self, vote_id: int) -> VoteRecord | None:
        async with self._db.session() as session:
            row = await session.get(RatingVoteRow, vote_id)
            return _vote(row) if row is not None else None

    async def get_vote_for(self, image_row_id: int, discord_id: int) -> VoteRecord | None:
        async with self._db.session() as session:
            row = await session.scalar(
                select(RatingVoteRow).where(
                    RatingVoteRow.image_row_id == image_row_id, RatingVoteRow.discord_id == discord_id
                )
            )
            return _vote(row) if row is not None else None

    async def claim_vote(
        self, vote_id: int, from_states: Sequence[str], now: datetime, *, artifacts: int | None = None
    ) -> bool:
        """Move a vote to `submitting`, held by this process; True only for the one caller that made the
        move (a vote another live process holds is not taken)."""
        values: dict[str, object] = {
            "state": SUBMITTING,
            "attempts": RatingVoteRow.attempts + 1,
            "updated_at": now,
            **self.vote_leases.held(now),
        }
        if artifacts is not None:
            values["artifacts"] = artifacts
        async with self._db.session() as session:
            result = await session.execute(
                update(RatingVoteRow)
                .where(
                    RatingVoteRow.id == vote_id,
                    RatingVoteRow.state.in_(list(from_states)),
                    self.vote_leases.claimable(now),
                )
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish_vote(
        self,
        vote_id: int,
        state: str,
        now: datetime,
        *,
        reward: float | None = None,
        error: str | None = None,
    ) -> VoteRecord | None:
        async with self._db.session() as session:
            await session.execute(
                update(RatingVoteRow)
                .where(RatingVoteRow.id == vote_id, RatingVoteRow.state == SUBMITTING)
                .values(state=state, reward=reward, error=_clip(error), updated_at=now, **self._ended(state))
            )
            row = await session.get(RatingVoteRow, vote_id)
            return _vote(row) if row is not None else None

    async def requeue_vote(self, vote_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(RatingVoteRow)
                .where(RatingVoteRow.id == vote_id, RatingVoteRow.state.in_([SUBMITTING, RETRYING]))
                .values(state=RETRYING)
            )

    @staticmethod
    def _ended(state: str) -> dict[str, object]:
        """A settled submission is nobody's work any more; one to retry stays with its process."""
        return LeasedRows.released() if state in (SUBMITTED, FAILED) else {}

    async def claim_unfinished(self, now: datetime) -> tuple[list[int], list[int]]:
        """Take the submissions (votes, generation ratings) cut off or waiting for a retry that nobody
        else holds: this process's own after a restart, and those of a process whose lease ran out."""
        unfinished = [SUBMITTING, RETRYING]
        votes = await self.vote_leases.claim(now, RatingVoteRow.state.in_(unfinished))
        generations = await self.generation_leases.claim(now, GenerationRatingRow.state.in_(unfinished))
        return votes, generations

    async def unheld(self, now: datetime) -> bool:
        """Whether a submission to retry waits for a new holder (its process died)."""
        unfinished = [SUBMITTING, RETRYING]
        return await self.vote_leases.expired(
            now, RatingVoteRow.state.in_(unfinished)
        ) or await self.generation_leases.expired(now, GenerationRatingRow.state.in_(unfinished))

    async def votes_for_image(self, image_row_id: int) -> list[VoteRecord]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(RatingVoteRow).where(RatingVoteRow.image_row_id == image_row_id)
            )
            return [_vote(row) for row in rows]

    # --- own generations -------------------------------------------------------------------------------

    async def add_generation(
        self,
        *,
        guild_id: int | None,
        discord_id: int,
        request_id: str,
        generation_ids: Sequence[str],
        now: datetime,
    ) -> GenerationRatingRecord:
        """Register a shared request for rating; registering the same request again returns the first row."""
        try:
            async with self._db.session() as session:
                row = GenerationRatingRow(
                    guild_id=guild_id,
                    discord_id=discord_id,
                    request_id=request_id,
                    state=OPEN,
                    preview_urls=[],
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                await session.flush()
                for position, generation_id in enumerate(generation_ids):
                    session.add(
                        GenerationRatingItemRow(
                            rating_id=row.id, position=position, generation_id=generation_id
                        )
                    )
                row_id = row.id
        except IntegrityError:
            async with self._db.session() as session:
                existing = await session.scalar(
                    select(GenerationRatingRow.id).where(GenerationRatingRow.request_id == request_id)
                )
            if existing is None:
                raise
            row_id = existing
        record = await self.get_generation(row_id)
        assert record is not None
        return record

    async def get_generation(self, rating_id: int) -> GenerationRatingRecord | None:
        async with self._db.session() as session:
            row = await session.get(GenerationRatingRow, rating_id)
            if row is None:
                return None
            items = await session.scalars(
                select(GenerationRatingItemRow)
                .where(GenerationRatingItemRow.rating_id == rating_id)
                .order_by(GenerationRatingItemRow.position)
            )
            return GenerationRatingRecord(
                id=row.id,
                guild_id=row.guild_id,
                discord_id=row.discord_id,
                request_id=row.request_id,
                state=row.state,
                preview_urls=tuple(row.preview_urls or ()),
                reward=row.reward,
                error=row.error,
                attempts=row.attempts,
                items=tuple(
                    GenerationItemRecord(
                        position=item.position,
                        generation_id=item.generation_id,
                        rating=item.rating,
                        artifacts=item.artifacts,
                    )
                    for item in items
                ),
            )

    async def set_preview_urls(self, rating_id: int, urls: Sequence[str]) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(GenerationRatingRow)
                .where(GenerationRatingRow.id == rating_id)
                .values(preview_urls=list(urls))
            )

    async def set_item_rating(self, rating_id: int, position: int, rating: int) -> bool:
        """First aesthetic choice for one image wins; later clicks change nothing."""
        return await self._set_item(
            rating_id,
            position,
            {"rating": rating},
            GenerationRatingItemRow.rating.is_(None),
        )

    async def set_item_artifacts(self, rating_id: int, position: int, artifacts: int) -> bool:
        return await self._set_item(
            rating_id,
            position,
            {"artifacts": artifacts},
            and_(GenerationRatingItemRow.rating.is_not(None), GenerationRatingItemRow.artifacts.is_(None)),
        )

    async def _set_item(
        self, rating_id: int, position: int, values: dict[str, int], condition: object
    ) -> bool:
        still_open = (
            select(GenerationRatingRow.id)
            .where(GenerationRatingRow.id == rating_id, GenerationRatingRow.state == OPEN)
            .scalar_subquery()
        )
        async with self._db.session() as session:
            result = await session.execute(
                update(GenerationRatingItemRow)
                .where(
                    GenerationRatingItemRow.rating_id == rating_id,
                    GenerationRatingItemRow.position == position,
                    condition,  # type: ignore[arg-type]
                    GenerationRatingItemRow.rating_id == still_open,
                )
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def claim_generation(self, rating_id: int, from_states: Sequence[str], now: datetime) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                update(GenerationRatingRow)
                .where(
                    GenerationRatingRow.id == rating_id,
                    GenerationRatingRow.state.in_(list(from_states)),
                    self.generation_leases.claimable(now),
                )
                .values(
                    state=SUBMITTING,
                    attempts=GenerationRatingRow.attempts + 1,
                    updated_at=now,
                    **self.generation_leases.held(now),
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish_generation(
        self,
        rating_id: int,
        state: str,
        now: datetime,
        *,
        reward: float | None = None,
        error: str | None = None,
    ) -> GenerationRatingRecord | None:
        async with self._db.session() as session:
            await session.execute(
                update(GenerationRatingRow)
                .where(GenerationRatingRow.id == rating_id, GenerationRatingRow.state == SUBMITTING)
                .values(state=state, reward=reward, error=_clip(error), updated_at=now, **self._ended(state))
            )
        return await self.get_generation(rating_id)

    async def requeue_generation(self, rating_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(GenerationRatingRow)
                .where(
                    GenerationRatingRow.id == rating_id,
                    GenerationRatingRow.state.in_([SUBMITTING, RETRYING]),
                )
                .values(state=RETRYING)
            )

    async def generation_created_at(self, rating_id: int) -> datetime | None:
        async with self._db.session() as session:
            return await session.scalar(
                select(GenerationRatingRow.created_at).where(GenerationRatingRow.id == rating_id)
            )

    # --- figures and privacy ----------------------------------------------------------------------------

    async def totals(self, *, guild_id: int | None, discord_id: int | None = None) -> Totals:
        """Submitted ratings, kudos earned, failures and pending, for a guild or one member in it."""
        async with self._db.session() as session:
            vote_filter = [RatingVoteRow.guild_id == guild_id]
            gen_filter = [GenerationRatingRow.guild_id == guild_id]
            if discord_id is not None:
                vote_filter.append(RatingVoteRow.discord_id == discord_id)
                gen_filter.append(GenerationRatingRow.discord_id == discord_id)
            votes = (
                await session.execute(
                    select(
                        RatingVoteRow.state, func.count(), func.coalesce(func.sum(RatingVoteRow.reward), 0)
                    )
                    .where(*vote_filter)
                    .group_by(RatingVoteRow.state)
                )
            ).all()
            gens = (
                await session.execute(
                    select(
                        GenerationRatingRow.state,
                        func.count(GenerationRatingItemRow.position),
                        func.count(func.distinct(GenerationRatingRow.id)),
                    )
                    .join(
                        GenerationRatingItemRow, GenerationRatingItemRow.rating_id == GenerationRatingRow.id
                    )
                    .where(*gen_filter, GenerationRatingRow.state != OPEN)
                    .group_by(GenerationRatingRow.state)
                )
            ).all()
            gen_rewards = await session.scalar(
                select(func.coalesce(func.sum(GenerationRatingRow.reward), 0)).where(
                    *gen_filter, GenerationRatingRow.state == SUBMITTED
                )
            )
        submitted = failures = pending = 0
        rewards = float(gen_rewards or 0)
        for state, count, reward_sum in votes:
            if state == SUBMITTED:
                submitted += count
                rewards += float(reward_sum or 0)
            elif state == FAILED:
                failures += count
            elif state in (SUBMITTING, RETRYING):
                pending += count
        for state, images, requests in gens:
            if state == SUBMITTED:
                submitted += images
            elif state == FAILED:
                failures += requests
            elif state in (SUBMITTING, RETRYING):
                pending += requests
        return Totals(submitted=submitted, rewards=rewards, failures=failures, pending=pending)

    async def forget_member(self, discord_id: int) -> None:
        """Unlink: delete every rating row of the member (the guild's figures shrink accordingly)."""
        async with self._db.session() as session:
            await session.execute(delete(RatingVoteRow).where(RatingVoteRow.discord_id == discord_id))
            await session.execute(
                delete(GenerationRatingRow).where(GenerationRatingRow.discord_id == discord_id)
            )
            await session.execute(
                delete(RatingImageRow).where(
                    RatingImageRow.owner_id == discord_id, RatingImageRow.is_party.is_(False)
                )
            )
            await session.execute(
                update(RatingImageRow).where(RatingImageRow.owner_id == discord_id).values(owner_id=0)
            )
