"""Table and repository of alchemy and text jobs (`alchemy_text_jobs`): both kinds share one table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

# The job engine's states in flight (`bot.services.jobs.engine`): waiting to be sent, on its way, sent,
# being cancelled. A row in one of them is resumed after a restart.
ACTIVE_STATES = ("queued", "submitting", "waiting", "cancelling")


class HordeJobRow(Base):
    """One alchemy or text request. `id` is ours (safe to show and to put in custom_ids);
    `horde_id` is the Horde's capability and never leaves the bot. No API key is stored here."""

    __tablename__ = "alchemy_text_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    horde_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    key_source: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    horde_id: str | None
    user_id: int
    guild_id: int | None
    channel_id: int | None
    payload: dict[str, Any]
    state: str
    key_source: str
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    deadline_at: datetime


def _job(row: HordeJobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        horde_id=row.horde_id,
        user_id=row.user_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        payload=dict(row.payload or {}),
        state=row.state,
        key_source=row.key_source,
        result=dict(row.result) if row.result is not None else None,
        error=row.error,
        created_at=row.created_at,
        deadline_at=row.deadline_at,
    )


class JobRepository:
    MEMBER_DATA = MemberData(forgets=("alchemy_text_jobs.user_id",))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        kind: str,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        payload: dict[str, Any],
        key_source: str,
        now: datetime,
        deadline_at: datetime,
    ) -> JobRecord:
        async with self._db.session() as session:
            row = HordeJobRow(
                kind=kind,
                horde_id=None,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                payload=payload,
                state="queued",
                key_source=key_source,
                created_at=now,
                deadline_at=deadline_at,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            return _job(row)

    async def get(self, job_id: int) -> JobRecord | None:
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            return _job(row) if row is not None else None

    async def submitted(self, job_id: int, horde_id: str, now: datetime, deadline_at: datetime) -> None:
        """Sent: the request kept for a restart while it waited (`keep_request`) is dropped."""
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            if row is not None:
                row.horde_id = horde_id
                row.state = "waiting"
                row.updated_at = now
                row.deadline_at = deadline_at
                if "pending" in (row.payload or {}):
                    row.payload = {k: v for k, v in row.payload.items() if k != "pending"}

    async def set_state(self, job_id: int, state: str, now: datetime) -> None:
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            if row is not None:
                row.state = state
                row.updated_at = now

    async def keep_request(self, job_id: int, pending: dict[str, Any], now: datetime) -> None:
        """A job waiting to be sent keeps what a restart needs to send it, under `payload["pending"]`."""
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            if row is not None:
                row.payload = {**(row.payload or {}), "pending": pending}
                row.updated_at = now

    async def finish(
        self,
        job_id: int,
        state: str,
        now: datetime,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            if row is not None:
                row.state = state
                row.result = result
                row.error = error
                row.updated_at = now

    async def active(self, kinds: Iterable[str]) -> list[JobRecord]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(HordeJobRow)
                .where(HordeJobRow.kind.in_(list(kinds)), HordeJobRow.state.in_(ACTIVE_STATES))
                .order_by(HordeJobRow.id)
            )
            return [_job(row) for row in rows]

    async def forget_member(self, user_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(delete(HordeJobRow).where(HordeJobRow.user_id == user_id))
