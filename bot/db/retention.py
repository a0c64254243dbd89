"""The retention rules: which rows of each growing table may go, and the batched delete that removes them.

Every rule is one table and one condition on a cutoff time; `RetentionService` (bot/services/retention.py)
decides the cutoffs from `[retention]` and walks the rules in small batches. A batch is one short
transaction (`DELETE ... WHERE id IN (first N ids that match)`), so a prune interrupted by a restart has
lost nothing and simply carries on at the next run: deleted rows are gone, the rest still match.
Rows still in use (jobs in flight, gifts not sent yet, open ratings, running parties) never match.

A rule with `clears` empties those columns of the matching rows instead of deleting them (a credential
that outlives its use on a row that stays: an expired interaction token on a job in flight); a rule of kind
`EXPIRED` has no `[retention]` key: its rows carry their own expiry, and it runs at every prune.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, select, text, update
from sqlalchemy.orm import InstrumentedAttribute

from bot.db.alchemy_text_jobs import HordeJobRow
from bot.db.chat import ChatSessionRow, ChatTurnRow
from bot.db.database import Database
from bot.db.generation import FINAL_STATES, GenerationJobRow
from bot.db.held_jobs import ACTIVE_STATES as TEXT_ACTIVE
from bot.db.kudos import FAILED as GIFT_FAILED
from bot.db.kudos import LAPSED, SENT, GiftRow, NoticeRow
from bot.db.parties import PartyRow
from bot.db.ratings import (
    FAILED,
    IMAGE_OPEN,
    SUBMITTED,
    GenerationRatingRow,
    RatingImageRow,
    RatingVoteRow,
)
from bot.db.roles import WorkerSeenRow
from bot.db.safety import SafetyIpTimeoutRow, SafetyRequestPaceRow, SafetyStrikeRow
from bot.db.sources import SourceImageRow

Condition = Callable[[datetime, datetime], ColumnElement[bool]]  # (cutoff, now) -> WHERE
# The kind of rules whose rows carry their own expiry: no `[retention]` key, the cutoff is now.
EXPIRED = "expired"


@dataclass(frozen=True)
class Rule:
    """Rows of `table` matching `where(cutoff, now)` may be deleted; `kind` names the `[retention]` key, and
    `also` keys whose retention applies too when it is shorter."""

    name: str
    kind: str
    key: InstrumentedAttribute[Any]  # the primary key column, for batches
    where: Condition
    also: tuple[str, ...] = ()
    clears: tuple[InstrumentedAttribute[Any], ...] = ()  # set to NULL instead of deleting the row


def _expired_reply_tokens(row: type[GenerationJobRow] | type[HordeJobRow]) -> Rule:
    """A job's interaction token past its 15 minutes, cleared on the row (which lives on)."""

    def expired(_cutoff: datetime, now: datetime) -> ColumnElement[bool]:
        return row.reply_expires_at < now

    return Rule(
        f"{row.__tablename__}.reply_token",
        EXPIRED,
        row.id,
        expired,
        clears=(row.reply_token, row.reply_expires_at),
    )


# The lease columns of shared work (`claimed_by`, `lease_until`: `bot.db.leases`) name a process and a time,
# no member data; they live as long as their row, so the rows' own rules cover them.
RULES: tuple[Rule, ...] = (
    Rule(
        "generation_jobs",
        "finished_jobs",
        GenerationJobRow.id,
        lambda cutoff, _now: and_(
            GenerationJobRow.state.in_(FINAL_STATES), GenerationJobRow.updated_at < cutoff
        ),
    ),
    Rule(
        "alchemy_text_jobs",
        "finished_jobs",
        HordeJobRow.id,
        lambda cutoff, _now: and_(HordeJobRow.state.not_in(TEXT_ACTIVE), HordeJobRow.updated_at < cutoff),
    ),
    # An interaction token (a credential, encrypted) is cleared when its job ends; one whose job is still in
    # flight past the token's 15 minutes is cleared here (`bot.db.held_jobs.ReplyColumns`).
    *(_expired_reply_tokens(row) for row in (GenerationJobRow, HordeJobRow)),
    Rule("chat_turns", "chat", ChatTurnRow.id, lambda cutoff, _now: ChatTurnRow.created_at < cutoff),
    # A conversation goes once it is older than the cutoff and has no turn left (an idle one).
    Rule(
        "chat_sessions",
        "chat",
        ChatSessionRow.id,
        lambda cutoff, _now: and_(
            ChatSessionRow.created_at < cutoff,
            ~exists().where(ChatTurnRow.session_id == ChatSessionRow.id),
        ),
    ),
    Rule(
        "rating_votes",
        "ratings",
        RatingVoteRow.id,
        lambda cutoff, _now: and_(
            RatingVoteRow.state.in_((SUBMITTED, FAILED)), RatingVoteRow.updated_at < cutoff
        ),
    ),
    Rule(
        "generation_ratings",
        "ratings",
        GenerationRatingRow.id,
        lambda cutoff, _now: and_(
            GenerationRatingRow.state.in_((SUBMITTED, FAILED)), GenerationRatingRow.updated_at < cutoff
        ),
    ),
    # Served images nobody rated: `rating_images` days, or `ratings` if shorter (as when the ratings service
    # pruned them itself after `[ratings] keep_days`, and this rule after `ratings`).
    Rule(
        "rating_images",
        "rating_images",
        RatingImageRow.id,
        lambda cutoff, _now: and_(
            RatingImageRow.state != IMAGE_OPEN,
            RatingImageRow.created_at < cutoff,
            ~exists().where(RatingVoteRow.image_row_id == RatingImageRow.id),
        ),
        also=("ratings",),
    ),
    Rule(
        "kudos_gifts",
        "kudos_ledger",
        GiftRow.id,
        lambda cutoff, _now: and_(
            GiftRow.state.in_((SENT, GIFT_FAILED, LAPSED)), GiftRow.updated_at < cutoff
        ),
    ),
    Rule(
        "kudos_parties",
        "parties",
        PartyRow.id,
        lambda cutoff, _now: and_(PartyRow.state == "ended", PartyRow.ended_at < cutoff),
    ),
    Rule("kudos_notices", "notices", NoticeRow.user_id, lambda cutoff, _now: NoticeRow.sent_at < cutoff),
    Rule(
        "safety_strikes",
        "safety_incidents",
        SafetyStrikeRow.id,
        # Never while its cooldown runs, whatever the retention says.
        lambda cutoff, now: and_(SafetyStrikeRow.created_at < cutoff, SafetyStrikeRow.cooldown_until < now),
    ),
    Rule(
        "safety_ip_timeouts",
        "safety_incidents",
        SafetyIpTimeoutRow.id,
        lambda cutoff, now: and_(SafetyIpTimeoutRow.created_at < cutoff, SafetyIpTimeoutRow.until < now),
    ),
    # A member's or a server's request pace is a full bucket (as no row) once its time has passed: useless
    # from then on.
    Rule(
        "safety_request_pace",
        EXPIRED,
        SafetyRequestPaceRow.subject_id,
        lambda _cutoff, now: SafetyRequestPaceRow.full_at < now,
    ),
    Rule(
        "role_worker_seen",
        "worker_seen",
        WorkerSeenRow.horde_user_id,
        lambda cutoff, _now: WorkerSeenRow.online_at < cutoff,
    ),
    Rule(
        "image_sources",
        "img2img_sources",
        SourceImageRow.id,
        lambda cutoff, _now: SourceImageRow.last_used_at < cutoff,
    ),
)


class RetentionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def prune_batch(self, rule: Rule, cutoff: datetime, now: datetime, limit: int) -> int:
        """Delete up to `limit` rows the rule allows; returns how many went (fewer than `limit`: done)."""
        where = rule.where(cutoff, now)
        async with self._db.session() as session:
            # Two steps (ids, then delete by id) rather than DELETE ... LIMIT, which PostgreSQL lacks.
            ids = list(await session.scalars(select(rule.key).where(where).order_by(rule.key).limit(limit)))
            if ids and rule.clears:
                emptied = {column.key: None for column in rule.clears}
                await session.execute(update(rule.key.class_).where(rule.key.in_(ids), where).values(emptied))
            elif ids:
                await session.execute(delete(rule.key.class_).where(rule.key.in_(ids), where))
            return len(ids)

    async def count(self, rule: Rule, cutoff: datetime, now: datetime) -> int:
        async with self._db.session() as session:
            query = select(func.count()).select_from(rule.key.class_).where(rule.where(cutoff, now))
            return int(await session.scalar(query) or 0)

    async def reclaim(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system (SQLite in incremental auto-vacuum mode; a
        no-op elsewhere: PostgreSQL's autovacuum does this itself). Returns how many pages were freed."""
        if not self._db.url.startswith("sqlite"):
            return 0
        async with self._db.session() as session:
            before = int((await session.execute(text("PRAGMA freelist_count"))).scalar_one())
            if before == 0:
                return 0
            mode = int((await session.execute(text("PRAGMA auto_vacuum"))).scalar_one())
            if mode != 2:  # not INCREMENTAL: freed pages are reused by new rows, the file doesn't shrink
                return 0
            # SQLite frees one page per step of this statement, and Python's sqlite3 steps a statement
            # without result columns once: `executescript` runs it to the end (it commits first: nothing
            # of this session's is pending, only reads).
            raw = await (await session.connection()).get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            after = int((await session.execute(text("PRAGMA freelist_count"))).scalar_one())
            return before - after
