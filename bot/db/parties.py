"""Table and repository of generation parties (`kudos_parties`); their awards are gifts (bot/db/kudos.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime


class PartyRow(Base):
    __tablename__ = "kudos_parties"
    __table_args__ = (Index("ix_kudos_parties_state", "state", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    host_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    style: Mapped[str] = mapped_column(String(200))
    award: Mapped[int] = mapped_column(Integer)
    recurring: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))  # active | ended
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Words every awarded prompt must contain (JSON-free: one per line, as the host typed them).
    words: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The shared key the host made for the party (encrypted like every key; cleared when the party ends,
    # when the key is deleted on the AI Horde) and the kudos it was given; what it spent, at the end.
    key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_kudos: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kudos_spent: Mapped[int | None] = mapped_column(Integer, nullable=True)


@dataclass(frozen=True)
class Party:
    id: int
    guild_id: int
    channel_id: int
    thread_id: int | None
    host_id: int
    name: str
    style: str
    award: int
    recurring: bool
    state: str
    started_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    words: tuple[str, ...] = ()
    key_encrypted: str | None = field(default=None, repr=False)
    key_kudos: int | None = None
    kudos_spent: int | None = None

    @property
    def pays(self) -> bool:
        """The host pays the thread's generations with the party's shared key (still held)."""
        return self.key_encrypted is not None


def _party(row: PartyRow) -> Party:
    return Party(
        id=row.id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        thread_id=row.thread_id,
        host_id=row.host_id,
        name=row.name,
        style=row.style,
        award=row.award,
        recurring=row.recurring,
        state=row.state,
        started_at=row.started_at,
        ends_at=row.ends_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        words=tuple(w for w in (row.words or "").split("\n") if w),
        key_encrypted=row.key_encrypted,
        key_kudos=row.key_kudos,
        kudos_spent=row.kudos_spent,
    )


class PartyRepository:
    MEMBER_DATA = MemberData(forgets=("kudos_parties.host_id",))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def forget_member(self, user_id: int) -> None:
        """/logout: the parties the member hosted go (`PartyService.forget_member` ends running ones)."""
        async with self._db.write_session() as session:
            await session.execute(delete(PartyRow).where(PartyRow.host_id == user_id))

    async def add(
        self,
        *,
        guild_id: int,
        channel_id: int,
        host_id: int,
        name: str,
        style: str,
        award: int,
        recurring: bool,
        started_at: datetime,
        ends_at: datetime,
        words: tuple[str, ...] = (),
        key_encrypted: str | None = None,
        key_kudos: int | None = None,
    ) -> Party:
        async with self._db.write_session() as session:
            row = PartyRow(
                guild_id=guild_id,
                channel_id=channel_id,
                thread_id=None,
                host_id=host_id,
                name=name,
                style=style,
                award=award,
                recurring=recurring,
                state="active",
                started_at=started_at,
                ends_at=ends_at,
                words="\n".join(words) or None,
                key_encrypted=key_encrypted,
                key_kudos=key_kudos,
            )
            session.add(row)
            await session.flush()
            return _party(row)

    async def set_thread(self, party_id: int, thread_id: int) -> None:
        async with self._db.write_session() as session:
            await session.execute(update(PartyRow).where(PartyRow.id == party_id).values(thread_id=thread_id))

    async def get(self, party_id: int) -> Party | None:
        async with self._db.session() as session:
            row = await session.get(PartyRow, party_id)
            return _party(row) if row is not None else None

    async def active(self, guild_id: int | None = None) -> list[Party]:
        async with self._db.session() as session:
            query = select(PartyRow).where(PartyRow.state == "active")
            if guild_id is not None:
                query = query.where(PartyRow.guild_id == guild_id)
            return [_party(r) for r in (await session.execute(query.order_by(PartyRow.id))).scalars()]

    async def end(self, party_id: int, reason: str, now: datetime) -> bool:
        """End an active party; False if it had already ended (so its notice is posted once)."""
        async with self._db.write_session() as session:
            result = await session.execute(
                update(PartyRow)
                .where(PartyRow.id == party_id, PartyRow.state == "active")
                .values(state="ended", ended_at=now, end_reason=reason)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def paying_party(self, thread_id: int) -> Party | None:
        """The running party of this thread whose host pays its generations (with the party's key)."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(PartyRow)
                .where(
                    PartyRow.thread_id == thread_id,
                    PartyRow.state == "active",
                    PartyRow.key_encrypted.is_not(None),
                )
                .order_by(PartyRow.id)
                .limit(1)
            )
            return _party(row) if row is not None else None

    async def drop_key(self, party_id: int, kudos_spent: int | None) -> None:
        """The party's key is gone (deleted on the AI Horde, or given up): forget it, keep what it spent."""
        async with self._db.write_session() as session:
            await session.execute(
                update(PartyRow)
                .where(PartyRow.id == party_id)
                .values(key_encrypted=None, kudos_spent=kudos_spent)
            )
