"""Leases on the work several bot processes share (issue #17): Horde jobs, kudos gifts, rating resends.

A row of shared work carries `claimed_by` (the holding process) and `lease_until` (wall time, UTC). A
process acts on a row only while it holds it; it renews all its leases in one UPDATE per table (the lease
keeper, `bot.services.leases`), and a row whose lease ran out (its process died, or stalled for longer than
a lease) is claimable by any process, which then resumes it as a restart would. New rows are inserted
already held by the process that made them.

On PostgreSQL a claim locks the rows it takes with `FOR UPDATE SKIP LOCKED`, so two processes claiming at
once take different rows and never wait for each other; on SQLite (one process, by the file lock in
`bot.db.database`) the same statement runs without the locking clause.

`claimed_by` and `lease_until` name a process and a time: no member data.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Index, String, Table, and_, exists, func, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database, session_dialect
from bot.db.group_commit import GroupCommit
from bot.db.types import UTCDateTime

HOLDER_LENGTH = 100
DEFAULT_LEASE_SECONDS = 30.0


@dataclass(frozen=True)
class Lease:
    """Who this process is, and how long a claim of it lasts without renewal."""

    holder: str
    seconds: float = DEFAULT_LEASE_SECONDS

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


_automatic: str | None = None


def process_holder(configured: str | None = None) -> str:
    """This process's name in `claimed_by`: the configured `database.process_id`, else made once per
    process from the host name, the pid and a random suffix (a restarted process is a new holder: its
    predecessor's work is taken over when those leases expire, never shared with a live twin)."""
    global _automatic
    if configured:
        return configured[:HOLDER_LENGTH]
    if _automatic is None:
        _automatic = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
    return _automatic


class LeaseColumns:
    """ORM mixin: the two lease columns of a table of shared work (a process and a time: no member data)."""

    claimed_by: Mapped[str | None] = mapped_column(
        String(HOLDER_LENGTH), nullable=True, info={"member_id": False}
    )
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def lease_index(table: str) -> Index:
    """The index renewals (by holder) and takeovers (by expiry) scan."""
    return Index(f"ix_{table}_lease", "claimed_by", "lease_until")


class LeasedRows:
    """Claims on one table's rows for this process. Every repository of shared work holds one; the
    statements here are the only ones that read or write the lease columns."""

    def __init__(self, db: Database, table: Table, lease: Lease) -> None:
        self._db = db
        self.table = table
        self.lease = lease
        self._holds: GroupCommit[tuple[int, datetime, ColumnElement[bool] | None], bool] = GroupCommit()

    @property
    def holder(self) -> str:
        return self.lease.holder

    # --- pieces of the repositories' own statements --------------------------------------------------

    def held(self, now: datetime) -> dict[str, Any]:
        """Values of a row this process takes (or keeps): inserts and claims."""
        return {"claimed_by": self.lease.holder, "lease_until": self.lease.until(now)}

    @staticmethod
    def released() -> dict[str, Any]:
        """Values of a row whose work is over (or handed back)."""
        return {"claimed_by": None, "lease_until": None}

    def mine(self) -> ColumnElement[bool]:
        """The row is held by this process (its lease may have run out unnoticed: still nobody else's)."""
        return self.table.c.claimed_by == self.lease.holder

    def claimable(self, now: datetime) -> ColumnElement[bool]:
        """Nobody holds the row, this process does, or its holder's lease ran out."""
        c = self.table.c
        return or_(c.claimed_by.is_(None), c.claimed_by == self.lease.holder, c.lease_until < now)

    # --- claims --------------------------------------------------------------------------------------

    async def claim(
        self, now: datetime, where: ColumnElement[bool], *, limit: int | None = None
    ) -> list[int]:
        """Take up to `limit` rows matching `where` that are claimable, oldest first; returns their ids
        (sorted). Rows another process is claiming at this moment are skipped, not waited for."""
        c = self.table.c
        async with self._db.write_session() as session:
            pick = select(c.id).where(where, self.claimable(now)).order_by(c.id)
            if limit is not None:
                pick = pick.limit(limit)
            if session_dialect(session) == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            result = await session.execute(
                update(self.table)
                .where(c.id.in_(pick.scalar_subquery()))
                .values(**self.held(now))
                .returning(c.id)
            )
            return sorted(int(row_id) for row_id in result.scalars())

    async def hold(self, row_id: int, now: datetime, where: ColumnElement[bool] | None = None) -> bool:
        """Before acting on a row (a POST, a check, a transfer): True if this process still holds it (its
        lease renewed), False if another process took it over (drop it, do nothing).

        Holds asked for while one is being written are written together by the next (`GroupCommit`): a
        storm of transfers or a poll pass over hundreds of jobs is a few transactions behind SQLite's
        one writer, not one each (each waited for the ones before it: a gift's first transfer queued
        behind every other giver's). `where` is compared by identity: pass a constant to share batches."""
        return await self._holds.submit((row_id, now, where), self._hold_many)

    async def _hold_many(self, items: list[tuple[int, datetime, ColumnElement[bool] | None]]) -> list[bool]:
        c = self.table.c
        values = self.held(max(at for _id, at, _where in items))
        by_condition: dict[int, tuple[ColumnElement[bool] | None, list[int]]] = {}
        for row_id, _at, where in items:
            by_condition.setdefault(id(where), (where, []))[1].append(row_id)
        held: set[int] = set()
        async with self._db.write_session() as session:
            for where, ids in by_condition.values():
                condition = and_(c.id.in_(ids), self.mine())
                if where is not None:
                    condition = and_(condition, where)
                result = await session.execute(
                    update(self.table).where(condition).values(**values).returning(c.id)
                )
                held.update(int(row_id) for row_id in result.scalars())
        return [row_id in held for row_id, _at, _where in items]

    async def renew(self, now: datetime) -> int:
        """Extend the leases this process holds (one UPDATE); returns how many.

        On PostgreSQL a row another transaction has locked at this moment (this process's hold batch or
        state change, already extending or about to end that row) is skipped, not waited for: the UPDATE
        would lock this process's rows one by one in the table's order, and a transaction locking two of
        them in another order (a hold batch does) deadlocked with it. A skipped row keeps its lease for two
        more passes of the keeper (it runs every third of a lease) and is renewed by the next."""
        c = self.table.c
        async with self._db.write_session() as session:
            where = self.mine()
            if session_dialect(session) == "postgresql":
                unlocked = select(c.id).where(where).with_for_update(skip_locked=True)
                where = c.id.in_(unlocked.scalar_subquery())
            result = await session.execute(
                update(self.table).where(where).values(lease_until=self.lease.until(now))
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def release_all(self) -> int:
        """A clean shutdown: this process's rows are free for the others at once (no lease to wait out)."""
        async with self._db.write_session() as session:
            result = await session.execute(update(self.table).where(self.mine()).values(**self.released()))
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def held_elsewhere(self) -> bool:
        """Whether another process holds any row, its lease run out or not."""
        c = self.table.c
        others = and_(c.claimed_by.is_not(None), c.claimed_by != self.lease.holder)
        async with self._db.session() as session:
            return bool(await session.scalar(select(exists().where(others))))

    async def expired(self, now: datetime, where: ColumnElement[bool]) -> bool:
        """Whether a row matching `where` waits for a new holder: another process's lease ran out, or
        nobody holds it."""
        c = self.table.c
        others = or_(c.claimed_by.is_(None), and_(c.claimed_by != self.lease.holder, c.lease_until < now))
        async with self._db.session() as session:
            return bool(await session.scalar(select(exists().where(where, others))))


async def database_time(db: Database) -> datetime:
    """The database server's own clock (PostgreSQL's `clock_timestamp()`, the time as the statement runs),
    for the lease keeper's check of this host's clock against it."""
    async with db.session() as session:
        value = await session.scalar(select(func.clock_timestamp()))
    assert isinstance(value, datetime)
    return value
