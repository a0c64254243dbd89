"""Safety records: refused prompts and Horde rejections per member (strikes), and the Horde's IP timeouts.

Both are kept in the database so a restart neither forgets a member's cooldown nor sends requests while the
AI Horde still has the bot's IP timed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, delete, func, select
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
        keeps={
            "safety_strikes.user_id": "a refused prompt's cooldown outlives /logout, so unlinking can't be "
            "used to skip it; a strike is deleted once its cooldown is over (and after "
            "retention.safety_incidents days at the latest); it holds no prompt text",
        }
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

    async def pauses(self, user_id: int, now: datetime) -> tuple[datetime | None, datetime | None]:
        """When the member's safety cooldown running at `now` ends, and when the bot's IP pause running at
        `now` ends (None: none), whichever process stored them: one query, for the command gate of a
        process sharing the database with others."""
        strikes, pauses = SafetyStrikeRow, SafetyIpTimeoutRow
        member = select(func.max(strikes.cooldown_until)).where(
            strikes.user_id == user_id, strikes.cooldown_until > now
        )
        ip = select(func.max(pauses.until)).where(pauses.until > now)
        async with self._db.session() as session:
            row = (await session.execute(select(member.scalar_subquery(), ip.scalar_subquery()))).one()
            return row[0], row[1]

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
