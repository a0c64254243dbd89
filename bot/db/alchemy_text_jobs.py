"""Table and repository of alchemy and text jobs (`alchemy_text_jobs`): both kinds share one table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Table, Text, and_, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.held_jobs import ACTIVE_STATES, NO_REPLY, HeldJobs, ReplyColumns
from bot.db.leases import Lease, LeaseColumns, LeasedRows, lease_index, process_holder
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

# The job engine's states in flight (`bot.services.jobs.engine`): waiting to be sent, on its way, sent,
# being cancelled, its result being posted. A row in one of them is resumed after a restart.


class HordeJobRow(ReplyColumns, LeaseColumns, Base):
    """One alchemy or text request. `id` is ours (safe to show and to put in custom_ids);
    `horde_id` is the Horde's capability and never leaves the bot. No API key is stored here. Active rows
    are held by one process at a time (`bot.db.leases`)."""

    __tablename__ = "alchemy_text_jobs"
    __table_args__ = (lease_index("alchemy_text_jobs"),)

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
    # POSTs of this job cut off by their process stopping before the Horde's answer was stored.
    interrupted_sends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # An end without a result (`ending`) told privately after a public reply, before the reply's placeholder
    # is removed: the process resuming the job only removes it (`told`). Cleared when the job ends.
    told_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


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
    interrupted_sends: int = 0
    # The command's interaction token, encrypted (`ReplyColumns`), and when it stops working.
    reply_token: str | None = field(default=None, repr=False)
    reply_expires_at: datetime | None = None
    # Ending without a result while its member is told (`delivering`): the state it ends in.
    ending: str | None = None
    # When that end was told after a public reply, its placeholder not yet removed (`JobRepository.told`).
    told_at: datetime | None = None


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
        interrupted_sends=row.interrupted_sends or 0,
        reply_token=row.reply_token,
        reply_expires_at=row.reply_expires_at,
        ending=row.ending,
        told_at=row.told_at,
    )


class JobRepository(HeldJobs):
    _row = HordeJobRow
    MEMBER_DATA = MemberData(forgets=("alchemy_text_jobs.user_id",))

    def __init__(self, db: Database, lease: Lease | None = None) -> None:
        self._db = db
        table = HordeJobRow.__table__
        assert isinstance(table, Table)
        self.leases = LeasedRows(db, table, lease or Lease(process_holder()))

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
                **self.leases.held(now),  # held by the process that made it
            )
            session.add(row)
            await session.flush()
            return _job(row)

    async def get(self, job_id: int) -> JobRecord | None:
        async with self._db.session() as session:
            row = await session.get(HordeJobRow, job_id)
            return _job(row) if row is not None else None

    async def submitted(self, job_id: int, horde_id: str, now: datetime, deadline_at: datetime) -> bool:
        """Sent: the request kept for a restart while it waited (`keep_request`) is dropped. False when
        another process took the job over while the POST was on its way."""
        async with self._db.session() as session:
            # Locked (PostgreSQL) so that no takeover slips between the check and the write.
            row = await session.get(HordeJobRow, job_id, with_for_update=True)
            if row is None or not self._held(row):
                return False
            row.horde_id = horde_id
            row.state = "waiting"
            row.updated_at = now
            row.deadline_at = deadline_at
            row.claimed_by, row.lease_until = self.leases.holder, self.leases.lease.until(now)
            if "pending" in (row.payload or {}):
                row.payload = {k: v for k, v in row.payload.items() if k != "pending"}
            return True

    def _held(self, row: HordeJobRow) -> bool:
        return row.claimed_by == self.leases.holder and row.state in ACTIVE_STATES

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
    ) -> bool:
        """End a job this process holds, in one conditional UPDATE (lease released): True for the one
        caller that ended it; False when another process took it over. A result is posted between
        `delivering` and this; an end without one too (`delivering` with its `ending` while it is told)."""
        values = {"state": state, "result": result, "error": error, "updated_at": now, "told_at": None}
        return await self._update_held(job_id, {**values, **NO_REPLY, **self.leases.released()}, active=True)

    async def told(self, job_id: int, now: datetime) -> bool:
        """An end without a result (`delivering` with its `ending`) was told after a public reply, whose
        placeholder is removed next: a process resuming the job after a stop in between only removes it.
        False when another process took the job over."""
        values = {"told_at": now, "updated_at": now, **self.leases.held(now)}
        return await self._update_held(job_id, values, active=True)

    async def active(self, kinds: Iterable[str]) -> list[JobRecord]:
        """Every job of these kinds in flight, whoever holds it."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(HordeJobRow)
                .where(HordeJobRow.kind.in_(list(kinds)), HordeJobRow.state.in_(ACTIVE_STATES))
                .order_by(HordeJobRow.id)
            )
            return [_job(row) for row in rows]

    async def claim_active(self, kinds: Iterable[str], now: datetime) -> list[JobRecord]:
        """Take every job of these kinds in flight that nobody else holds (this process's own after a
        restart, and those of a process whose lease ran out), oldest first."""
        kinds = list(kinds)
        in_flight = and_(HordeJobRow.kind.in_(kinds), HordeJobRow.state.in_(ACTIVE_STATES))
        ids = await self.leases.claim(now, in_flight)
        if not ids:
            return []
        async with self._db.session() as session:
            rows = await session.scalars(
                select(HordeJobRow)
                .where(HordeJobRow.id.in_(ids), self.leases.mine())
                .order_by(HordeJobRow.id)
            )
            return [_job(row) for row in rows]

    async def unheld(self, kinds: Iterable[str], now: datetime) -> bool:
        """Whether a job of these kinds in flight waits for a new holder (its process died)."""
        in_flight = and_(HordeJobRow.kind.in_(list(kinds)), HordeJobRow.state.in_(ACTIVE_STATES))
        return await self.leases.expired(now, in_flight)

    async def forget_member(self, user_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(delete(HordeJobRow).where(HordeJobRow.user_id == user_id))
