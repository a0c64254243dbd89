"""Safety records: refused prompts and Horde rejections per member (strikes), and the Horde's IP timeouts.

Both are kept in the database so a restart neither forgets a member's cooldown nor sends requests while the
AI Horde still has the bot's IP timed out. Where several bot processes share the database (PostgreSQL,
issue #17), each member's request pace is kept here too (`safety_request_pace`), so their per-minute limit
holds across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Index, Integer, ScalarSelect, String, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime


class SafetyStrikeRow(Base):
    """One refused prompt (reason "csam"/"custom") or Horde rejection ("CorruptPrompt"/"TimeoutIP")."""

    __tablename__ = "safety_strikes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str] = mapped_column(String(32))
    # 0 for a first strike; one more than the previous strike's while strikes keep coming.
    level: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The member may send prompts again from this time on.
    cooldown_until: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_safety_strikes_user_created", "user_id", "created_at"),)


class SafetyIpTimeoutRow(Base):
    """A pause of every Horde request the bot sends, after the Horde timed out (or will time out) its IP."""

    __tablename__ = "safety_ip_timeouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rc: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime())


class SafetyRequestPaceRow(Base):
    """A member's request bucket on a shared database, as one time (GCRA): when it is full again. Each
    request moves it one refill interval later (from now at the earliest); a request is allowed while it
    is at most `burst - 1` intervals ahead. A row whose time has passed is a full bucket, as no row is."""

    __tablename__ = "safety_request_pace"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    full_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


def _ip_until(now: datetime) -> ScalarSelect[datetime]:
    """When the bot's IP pause running at `now` ends (NULL: none)."""
    pauses = SafetyIpTimeoutRow
    return select(func.max(pauses.until)).where(pauses.until > now).scalar_subquery()


@dataclass(frozen=True)
class RequestPace:
    """A member's per-minute limit: `burst` requests at once, one more every `interval`."""

    burst: int
    interval: timedelta

    @property
    def limit(self) -> timedelta:
        """How far ahead the bucket's time may be for one more request: burst - 1 intervals, and a little
        slack (half an interval, a second at most), because the requests' times come from each
        process's clock, taken before the statement: the second request counted may carry a time a
        millisecond earlier than the first's, which would otherwise refuse the last one of a burst."""
        return self.interval * (self.burst - 1) + min(self.interval / 2, timedelta(seconds=1))


@dataclass(frozen=True)
class Gate:
    """What the command gate of a process sharing the database learns in its one query."""

    member: datetime | None  # the member's safety cooldown running now ends then
    ip: datetime | None  # the bot's IP pause running now ends then
    wait: float  # seconds until the member may send again (0: the request was counted, they may)


@dataclass(frozen=True)
class Strike:
    user_id: int
    guild_id: int | None
    reason: str
    level: int
    created_at: datetime
    cooldown_until: datetime


@dataclass(frozen=True)
class IpTimeout:
    rc: str
    created_at: datetime
    until: datetime


class SafetyRepository:
    MEMBER_DATA = MemberData(
        forgets=("safety_request_pace.user_id",),
        keeps={
            "safety_strikes.user_id": "a refused prompt's cooldown outlives /logout, so unlinking can't be "
            "used to skip it; a strike is deleted once its cooldown is over (and after "
            "retention.safety_incidents days at the latest); it holds no prompt text",
        },
    )

    def __init__(self, db: Database) -> None:
        self._db = db

    async def last_strike(self, user_id: int) -> Strike | None:
        """The member's latest strike, if one is still remembered."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(SafetyStrikeRow)
                .where(SafetyStrikeRow.user_id == user_id)
                .order_by(SafetyStrikeRow.created_at.desc(), SafetyStrikeRow.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            return Strike(
                row.user_id, row.guild_id, row.reason, row.level, row.created_at, row.cooldown_until
            )

    async def cooldowns_after(self, now: datetime) -> dict[int, datetime]:
        """Every member whose cooldown is still running at `now`, with when it ends (one query at start-up,
        so the command gate never reads the database)."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(SafetyStrikeRow.user_id, func.max(SafetyStrikeRow.cooldown_until))
                .where(SafetyStrikeRow.cooldown_until > now)
                .group_by(SafetyStrikeRow.user_id)
            )
            return {int(user_id): until for user_id, until in rows}

    @property
    def shared(self) -> bool:
        """Other bot processes may store strikes and IP pauses here (see `pauses`)."""
        return self._db.shared

    async def gate(self, user_id: int, now: datetime, pace: RequestPace | None = None) -> Gate:
        """One statement for the command gate of a process sharing the database with others: when the
        member's safety cooldown running at `now` ends and when the bot's IP pause running at `now` ends
        (None: none), whichever process stored them; and with `pace` (PostgreSQL only), the member's request
        counted against it, in every process, unless a pause runs or the limit is reached (`wait` > 0).

        The count is an upsert whose row lock makes a member's requests reaching several processes at once
        take turns, so together they never pass the limit."""
        strikes, paced = SafetyStrikeRow, SafetyRequestPaceRow
        member = (
            select(func.max(strikes.cooldown_until))
            .where(strikes.user_id == user_id, strikes.cooldown_until > now)
            .scalar_subquery()
        )
        ip = _ip_until(now)
        if pace is None:
            async with self._db.session() as session:
                row = (await session.execute(select(member, ip))).one()
                return Gate(row[0], row[1], 0.0)
        # Counted only while no pause runs (a paused member's refused commands don't use up their pace).
        counted = (
            pg_insert(paced)
            .from_select(
                ["user_id", "full_at"],
                select(literal(user_id, BigInteger), literal(now + pace.interval, UTCDateTime())).where(
                    member.is_(None), ip.is_(None)
                ),
            )
            .on_conflict_do_update(
                index_elements=[paced.user_id],
                set_={"full_at": func.greatest(paced.full_at, now) + pace.interval},
                where=paced.full_at < now + pace.limit,
            )
            .returning(paced.full_at)
            .cte("counted")
        )
        query = select(member, ip, select(counted.c.full_at).scalar_subquery())
        async with self._db.session() as session:
            member_until, ip_until, counted_until = (await session.execute(query)).one()
            if counted_until is not None or member_until is not None or ip_until is not None:
                return Gate(member_until, ip_until, 0.0)
            # Refused (rare): the wait, from the row as it is now. This statement's own snapshot may predate
            # another process's count that its row lock waited for; the next statement sees that.
            full_at = await session.scalar(select(paced.full_at).where(paced.user_id == user_id))
        # The bucket is full again at `full_at`; a request fits once that is less than `limit` away.
        ahead = (full_at or now) - now - pace.limit
        return Gate(None, None, max(ahead.total_seconds(), 0.0) or 1.0)

    async def ip_paused_until(self, now: datetime) -> datetime | None:
        """When the bot's IP pause running at `now` ends (None: none), whichever process stored it."""
        async with self._db.session() as session:
            return await session.scalar(select(_ip_until(now)))

    async def forget_member(self, discord_id: int) -> None:
        """The member's request pace (their refused prompts' cooldowns are kept: see MEMBER_DATA)."""
        async with self._db.session() as session:
            paced = SafetyRequestPaceRow
            await session.execute(delete(paced).where(paced.user_id == discord_id))

    async def add_strike(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        reason: str,
        level: int,
        now: datetime,
        cooldown_until: datetime,
    ) -> None:
        async with self._db.session() as session:
            session.add(
                SafetyStrikeRow(
                    user_id=user_id,
                    guild_id=guild_id,
                    reason=reason,
                    level=level,
                    created_at=now,
                    cooldown_until=cooldown_until,
                )
            )

    async def prune_strikes(self, before: datetime) -> None:
        """Forget strikes whose cooldown ended before `before` (they no longer count)."""
        async with self._db.session() as session:
            await session.execute(delete(SafetyStrikeRow).where(SafetyStrikeRow.cooldown_until < before))

    async def ip_timeouts_since(self, since: datetime) -> list[IpTimeout]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(SafetyIpTimeoutRow)
                .where(SafetyIpTimeoutRow.created_at >= since)
                .order_by(SafetyIpTimeoutRow.created_at, SafetyIpTimeoutRow.id)
            )
            return [IpTimeout(r.rc, r.created_at, r.until) for r in rows]

    async def add_ip_timeout(self, *, rc: str, now: datetime, until: datetime) -> None:
        async with self._db.session() as session:
            session.add(SafetyIpTimeoutRow(rc=rc, created_at=now, until=until))
