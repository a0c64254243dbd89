"""The image generation jobs table and its repository.

`id` is ours: it is what buttons and messages carry. `horde_id` is the Horde's request id, a capability
(anyone holding it can cancel the request): it never leaves the bot. No API key is stored here; the
payload is the request body as sent (the key travels in a header).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database, session_dialect
from bot.db.held_jobs import ACTIVE_STATES, NO_REPLY, HeldJobs, ReplyColumns
from bot.db.leases import Lease, LeaseColumns, LeasedRows, lease_index, process_holder
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.sources import store_source
from bot.db.types import UTCDateTime

# queued: stored, waiting in the pacer's line to be sent (a restart sends it, in order); submitting: the
# POST has left, not answered yet (a restart sends it again once, first in line, counting it in
# `interrupted_sends`; a second cut-off fails it); waiting: polled; cancelling: DELETE sent, not
# delivered yet; delivering: finished at the Horde, its result being posted (a restart or takeover fetches
# it again and posts it with the job's nonce, so a post the stopped process made is not made twice).
FINAL_STATES = ("done", "partial", "failed", "cancelled", "expired")


class GenerationJobRow(ReplyColumns, LeaseColumns, Base):
    # Active rows are held by one process at a time (`bot.db.leases`): the one that polls and delivers.
    __tablename__ = "generation_jobs"
    __table_args__ = (lease_index("generation_jobs"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    horde_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The progress message (the interaction's original response); results may replace it.
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    result_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    key_source: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    notice: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    kudos: Mapped[float] = mapped_column(Float, default=0.0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    style: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The img2img source, kept apart and briefly (`bot.db.sources`); the payload carries none.
    source_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # POSTs of this job cut off by their process stopping before the Horde's answer was stored.
    interrupted_sends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class GenerationJob:
    id: int
    horde_id: str | None
    user_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    result_message_id: int | None
    private: bool
    anonymous: bool
    key_source: str
    payload: dict[str, Any]
    notice: str | None
    state: str
    error: str | None
    kudos: float
    images: int
    style: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime
    source_id: int | None = None
    interrupted_sends: int = 0
    # The command's interaction token, encrypted (`ReplyColumns`), and when it stops working.
    reply_token: str | None = field(default=None, repr=False)
    reply_expires_at: datetime | None = None
    # Ending without a result while its member is told (`delivering`): the state it ends in.
    ending: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _record(row: GenerationJobRow) -> GenerationJob:
    return GenerationJob(
        id=row.id,
        horde_id=row.horde_id,
        user_id=row.user_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        message_id=row.message_id,
        result_message_id=row.result_message_id,
        private=row.private,
        anonymous=row.anonymous,
        key_source=row.key_source,
        payload=dict(row.payload or {}),
        notice=row.notice,
        state=row.state,
        error=row.error,
        kudos=row.kudos or 0.0,
        images=row.images or 0,
        style=row.style,
        model=row.model,
        created_at=row.created_at,
        updated_at=row.updated_at,
        source_id=row.source_id,
        interrupted_sends=row.interrupted_sends or 0,
        reply_token=row.reply_token,
        reply_expires_at=row.reply_expires_at,
        ending=row.ending,
    )


@dataclass(frozen=True)
class JobCaps:
    """The limits a job is stored within, on a database several processes share."""

    per_member: int
    per_server: int
    cooldown_seconds: float  # since the member's newest job was stored (wall time: every process's)


class CapReached(Exception):
    """A job `create` did not store: which limit refused it, "member" or "server" (`count` in flight), or
    "cooldown" (`wait_seconds` left). The service words it for the member."""

    def __init__(self, limit: str, *, count: int = 0, wait_seconds: float = 0.0) -> None:
        super().__init__(limit)
        self.limit = limit
        self.count = count
        self.wait_seconds = wait_seconds


@dataclass(frozen=True)
class InFlight:
    member: int
    server: int
    last_sent: datetime | None  # the member's newest job (created_at), if any after the asked time


def _lock_key(kind: str, snowflake: int) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit number) for one member's or one server's generation
    caps. A digest, not Python's `hash` (salted per process): every process must compute the same key. A
    collision only makes two members take turns."""
    digest = hashlib.blake2b(f"generation_jobs:{kind}:{snowflake}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class GenerationJobRepository(HeldJobs):
    _row = GenerationJobRow
    MEMBER_DATA = MemberData(forgets=("generation_jobs.user_id",))

    def __init__(self, db: Database, lease: Lease | None = None) -> None:
        self._db = db
        table = GenerationJobRow.__table__
        assert isinstance(table, Table)
        self.leases = LeasedRows(db, table, lease or Lease(process_holder()))

    async def create(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        private: bool,
        anonymous: bool,
        key_source: str,
        payload: dict[str, Any],
        notice: str | None,
        style: str | None,
        model: str | None,
        now: datetime,
        source: bytes | None = None,
        caps: JobCaps | None = None,
    ) -> GenerationJob:
        """Store a job `queued`, held by this process, with its img2img `source` (into the source store,
        `bot.db.sources`, in the same transaction: a job refused here leaves no source behind; the caller
        evicts beyond the store's bound after).

        With `caps` (a database several processes share), the member's and the server's caps are checked
        again in the transaction that inserts, under a lock per member and per server that every process
        takes the same way: two processes storing the same member's jobs at the same instant take turns,
        and the second counts the first's row. Without (SQLite: one process, whose `GenerationLimits`
        checks and reserves in one step of its event loop), the row is stored as it is.

        Raises `CapReached` when `caps` refuse it (nothing stored)."""
        async with self._db.session() as session:
            if caps is not None:
                await self._check_caps(session, caps, user_id=user_id, guild_id=guild_id, now=now)
            source_id = await store_source(session, user_id, source, now) if source is not None else None
            row = GenerationJobRow(
                horde_id=None,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                private=private,
                anonymous=anonymous,
                key_source=key_source,
                payload=payload,
                notice=notice,
                state="queued",
                kudos=0.0,
                images=0,
                style=style,
                model=model,
                source_id=source_id,
                created_at=now,
                updated_at=now,
                **self.leases.held(now),  # held by the process that made it
            )
            session.add(row)
            await session.flush()
            return _record(row)

    async def _check_caps(
        self, session: Any, caps: JobCaps, *, user_id: int, guild_id: int | None, now: datetime
    ) -> None:
        # Member first, then server, in every transaction: two transactions never wait on each other's.
        # Held until the insert commits (`pg_advisory_xact_lock`); any SELECT after it sees every row
        # committed before the lock was granted (READ COMMITTED takes a new snapshot per statement).
        keys = [_lock_key("member", user_id)] + (
            [_lock_key("server", guild_id)] if guild_id is not None else []
        )
        if session_dialect(session) == "postgresql":
            # One round trip; the select list is evaluated in order.
            await session.execute(select(*(func.pg_advisory_xact_lock(key) for key in keys)))
        seen = await self._in_flight(
            session, user_id, guild_id, now - timedelta(seconds=caps.cooldown_seconds)
        )
        if caps.cooldown_seconds > 0 and seen.last_sent is not None:
            # Not below 0: the other process's `now` may be a moment later than this one's.
            left = caps.cooldown_seconds - max(0.0, (now - seen.last_sent).total_seconds())
            if left > 0:
                raise CapReached("cooldown", wait_seconds=left)
        if seen.member >= caps.per_member:
            raise CapReached("member", count=seen.member)
        if guild_id is not None and seen.server >= caps.per_server:
            raise CapReached("server", count=seen.server)

    async def _in_flight(
        self,
        session: Any,
        user_id: int,
        guild_id: int | None,
        since: datetime,
        where: ColumnElement[bool] | None = None,
    ) -> InFlight:
        t = GenerationJobRow
        active: ColumnElement[bool] = t.state.in_(ACTIVE_STATES)
        if where is not None:
            active = and_(active, where)
        member = t.user_id == user_id
        server = t.guild_id == guild_id if guild_id is not None else false()
        recent = and_(member, t.created_at > since)  # the member's jobs within the cooldown
        row = (
            await session.execute(
                select(
                    func.count().filter(and_(active, member)),
                    func.count().filter(and_(active, server)),
                    func.max(t.created_at).filter(recent),
                ).where(or_(and_(active, or_(member, server)), recent))
            )
        ).one()
        return InFlight(int(row[0] or 0), int(row[1] or 0), row[2])

    async def get(self, job_id: int) -> GenerationJob | None:
        async with self._db.session() as session:
            row = await session.get(GenerationJobRow, job_id)
            return _record(row) if row is not None else None

    async def submitted(self, job_id: int, horde_id: str, kudos: float, now: datetime) -> bool:
        """The Horde accepted it. False when another process took the job over while the POST was on its
        way (it failed the job as "cut off while sending"): the request is then this process's to drop."""
        values = {"horde_id": horde_id, "kudos": kudos, "state": "waiting", "updated_at": now}
        return await self._update_held(job_id, {**values, **self.leases.held(now)}, active=True)

    async def set_message(self, job_id: int, message_id: int, now: datetime) -> None:
        async with self._db.session() as session:
            row = await session.get(GenerationJobRow, job_id)
            if row is not None:
                row.message_id = message_id
                row.updated_at = now

    async def finish(
        self,
        job_id: int,
        state: str,
        now: datetime,
        *,
        error: str | None = None,
        kudos: float | None = None,
        images: int = 0,
        result_message_id: int | None = None,
    ) -> bool:
        """End a job this process holds, in one conditional UPDATE (the lease released): True for the one
        caller that ended it; False when another process took it over. A result is posted between
        `delivering` and this; an end without one too (`delivering` with its `ending` while it is told)."""
        values: dict[str, Any] = {
            "state": state,
            "error": error,
            "images": images,
            "updated_at": now,
            "finished_at": now,
            **NO_REPLY,
            **self.leases.released(),
        }
        if kudos is not None:
            values["kudos"] = kudos
        if result_message_id is not None:
            values["result_message_id"] = result_message_id
        return await self._update_held(job_id, values, active=True)

    async def active(self) -> list[GenerationJob]:
        """Every job in flight, whoever holds it."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(GenerationJobRow)
                .where(GenerationJobRow.state.in_(ACTIVE_STATES))
                .order_by(GenerationJobRow.id)
            )
            return [_record(row) for row in rows]

    async def claim_active(self, now: datetime) -> list[GenerationJob]:
        """Take every job in flight that nobody else holds (this process's own after a restart, and those
        of a process whose lease ran out), oldest first."""
        ids = await self.leases.claim(now, GenerationJobRow.state.in_(ACTIVE_STATES))
        if not ids:
            return []
        async with self._db.session() as session:
            rows = await session.scalars(
                select(GenerationJobRow)
                .where(GenerationJobRow.id.in_(ids), self.leases.mine())
                .order_by(GenerationJobRow.id)
            )
            return [_record(row) for row in rows]

    async def unheld(self, now: datetime) -> bool:
        """Whether a job in flight waits for a new holder (its process died)."""
        return await self.leases.expired(now, GenerationJobRow.state.in_(ACTIVE_STATES))

    @property
    def shared(self) -> bool:
        """Other bot processes may hold jobs of this table (see `in_flight_elsewhere`)."""
        return self._db.shared

    async def in_flight_elsewhere(self, user_id: int, guild_id: int | None, since: datetime) -> InFlight:
        """Jobs in flight of this member, and of this server, that this process does not hold: another
        process's, or nobody's until one takes them over; and when the member's newest job after `since`
        was stored, in any process. What the caps and the cooldown read beside this process's own
        (`GenerationLimits`), when several processes share the database."""
        others = or_(GenerationJobRow.claimed_by.is_(None), ~self.leases.mine())
        async with self._db.session() as session:
            return await self._in_flight(session, user_id, guild_id, since, others)

    async def by_message(self, message_id: int) -> GenerationJob | None:
        async with self._db.session() as session:
            row = await session.scalar(
                select(GenerationJobRow)
                .where(
                    or_(
                        GenerationJobRow.message_id == message_id,
                        GenerationJobRow.result_message_id == message_id,
                    )
                )
                .order_by(GenerationJobRow.id.desc())
                .limit(1)
            )
            return _record(row) if row is not None else None

    async def forget_member(self, user_id: int) -> None:
        """/logout: every job the member asked for (prompts, Horde ids), in flight or finished."""
        async with self._db.session() as session:
            await session.execute(delete(GenerationJobRow).where(GenerationJobRow.user_id == user_id))
