"""Safety records: refused prompts and Horde rejections per member (strikes), and the Horde's IP timeouts.

Both are kept in the database so a restart neither forgets a member's cooldown nor sends requests while the
AI Horde still has the bot's IP timed out. Where several bot processes share the database (PostgreSQL,
issue #17), each member's and each server's request pace is kept here too (`safety_request_pace`), so their
per-minute limits hold across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Index,
    Integer,
    ScalarSelect,
    String,
    delete,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
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


MEMBER, SERVER = "member", "server"  # the scopes of request buckets


class SafetyRequestPaceRow(Base):
    """A member's or a server's request bucket on a shared database, as one time (GCRA): when it is full
    again. Each request moves it one refill interval later (from now at the earliest); a request is allowed
    while it is at most `burst - 1` intervals ahead. A row whose time has passed is a full bucket, as no row
    is (retention deletes it then)."""

    __tablename__ = "safety_request_pace"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # MEMBER or SERVER
    # The member's Discord id (MEMBER: forgotten by /logout) or the server's (SERVER).
    subject_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, info={"member_id": True}
    )
    full_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


def _ip_until(now: datetime) -> ScalarSelect[datetime]:
    """When the bot's IP pause running at `now` ends (NULL: none)."""
    pauses = SafetyIpTimeoutRow
    return select(func.max(pauses.until)).where(pauses.until > now).scalar_subquery()


@dataclass(frozen=True)
class RequestPace:
    """A member's or a server's per-minute limit: `burst` requests at once, one more every `interval`."""

    burst: int
    interval: timedelta

    @property
    def limit(self) -> timedelta:
        """How far ahead the bucket's time may be for one more request: burst - 1 intervals, and a little
        slack (half an interval, a second at most), because the requests' times come from each
        process's clock, taken before the statement: the second request counted may carry a time a
        millisecond earlier than the first's, which would otherwise refuse the last one of a burst."""
        return self.interval * (self.burst - 1) + min(self.interval / 2, timedelta(seconds=1))

    def wait(self, full_at: datetime | None, now: datetime) -> float:
        """Seconds until one more request fits a bucket full again at `full_at` (1 at least: it was just
        refused)."""
        ahead = (full_at or now) - now - self.limit
        return max(ahead.total_seconds(), 0.0) or 1.0

    def counted(self, scope: str, subject_id: int, now: datetime, *allowed: ColumnElement[bool]) -> CTE:
        """One request counted in a bucket, while `allowed` holds and the limit isn't reached: the upsert
        returns the bucket's new time, or nothing. Its row lock makes requests counted in the same bucket
        by several processes at once take turns (PostgreSQL)."""
        paced = SafetyRequestPaceRow
        return (
            pg_insert(paced)
            .from_select(
                ["scope", "subject_id", "full_at"],
                select(
                    literal(scope, String),
                    literal(subject_id, BigInteger),
                    literal(now + self.interval, UTCDateTime()),
                ).where(*allowed),
            )
            .on_conflict_do_update(
                index_elements=[paced.scope, paced.subject_id],
                set_={"full_at": func.greatest(paced.full_at, now) + self.interval},
                where=paced.full_at < now + self.limit,
            )
            .returning(paced.full_at)
            .cte(f"counted_{scope}")
        )


@dataclass(frozen=True)
class Gate:
    """What the command gate of a process sharing the database learns in its one query."""

    member: datetime | None  # the member's safety cooldown running now ends then
    ip: datetime | None  # the bot's IP pause running now ends then
    wait: float  # seconds until the member may send again (0: the request was counted, they may)
    server_wait: float = 0.0  # seconds until the server may send again (its limit refused the request)


class _GiveBack(Exception):
    """The member's limit refused a request the server's had counted: the count is rolled back."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


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
        forgets=("safety_request_pace.subject_id",),
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

    async def gate(
        self,
        user_id: int,
        now: datetime,
        pace: RequestPace | None = None,
        server: tuple[int, RequestPace] | None = None,
    ) -> Gate:
        """One statement for the command gate of a process sharing the database with others: when the
        member's safety cooldown running at `now` ends and when the bot's IP pause running at `now` ends
        (None: none), whichever process stored them; and with `pace` (PostgreSQL only), the request counted
        against the member's limit, and with `server` (its id and its limit) first against the server's, in
        every process, unless a pause runs or a limit is reached (`wait` or `server_wait` > 0). A request
        one limit refuses counts against neither: the server's is counted only if it has room, the member's
        only if the server's was counted, and the server's given back (rolled back) when the member's
        refuses.

        Each count is an upsert whose row lock makes requests of one member (or one server) reaching several
        processes at once take turns, so together they never pass the limit. A server's row is always locked
        before its member's, so two gates never wait on each other's."""
        strikes = SafetyStrikeRow
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
        # Counted only while no pause runs (a paused member's refused commands don't use up any pace).
        allowed: tuple[ColumnElement[bool], ...] = (member.is_(None), ip.is_(None))
        columns: list[Any] = [member, ip]
        if server is not None:
            by_server = server[1].counted(SERVER, server[0], now, *allowed)
            columns.append(select(by_server.c.full_at).scalar_subquery())
            allowed = (exists(select(by_server.c.full_at)),)
        by_member = pace.counted(MEMBER, user_id, now, *allowed)
        columns.append(select(by_member.c.full_at).scalar_subquery())
        try:
            async with self._db.session() as session:
                member_until, ip_until, *counted = (await session.execute(select(*columns))).one()
                if counted[-1] is not None or member_until is not None or ip_until is not None:
                    return Gate(member_until, ip_until, 0.0)
                # Refused (rare): the wait, from the row as it is now. This statement's own snapshot may
                # predate another process's count that its row lock waited for; the next statement sees it.
                if server is not None and counted[0] is None:
                    full_at = await self._full_at(session, SERVER, server[0])
                    return Gate(None, None, 0.0, server_wait=server[1].wait(full_at, now))
                wait = pace.wait(await self._full_at(session, MEMBER, user_id), now)
                if server is not None:
                    raise _GiveBack(wait)
        except _GiveBack as back:
            return Gate(None, None, back.wait)
        return Gate(None, None, wait)

    @staticmethod
    async def _full_at(session: AsyncSession, scope: str, subject_id: int) -> datetime | None:
        paced = SafetyRequestPaceRow
        return await session.scalar(
            select(paced.full_at).where(paced.scope == scope, paced.subject_id == subject_id)
        )

    async def ip_paused_until(self, now: datetime) -> datetime | None:
        """When the bot's IP pause running at `now` ends (None: none), whichever process stored it."""
        async with self._db.session() as session:
            return await session.scalar(select(_ip_until(now)))

    async def forget_member(self, discord_id: int) -> None:
        """The member's request pace (their refused prompts' cooldowns are kept: see MEMBER_DATA)."""
        async with self._db.session() as session:
            paced = SafetyRequestPaceRow
            await session.execute(delete(paced).where(paced.scope == MEMBER, paced.subject_id == discord_id))

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
