"""Automated roles: the background sync's cursor, remembered role problems, workers seen online."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

ALL_SERVERS = "all"  # the scope of a process with every shard (one process: the only row)


class RoleSyncStateRow(Base):
    """Where the background sync is, so a restart resumes instead of starting over: one row per shard set
    (`scope`), as each process walks the members for its own servers."""

    __tablename__ = "role_sync_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    scope: Mapped[str] = mapped_column(String(64), unique=True, server_default=ALL_SERVERS)
    # Last Discord member id fully handled in the current pass (0: the pass has not started).
    cursor: Mapped[int] = mapped_column(BigInteger)
    pass_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RoleProblemRow(Base):
    """A role the bot could not manage in a guild (role 0: the whole guild, e.g. no Manage Roles)."""

    __tablename__ = "role_problems"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    role_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(String(32))
    noted_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkerSeenRow(Base):
    """When the bot last saw one of a Horde user's workers online (the Horde only says "in the last 5
    minutes", so "online in the last day" is what the bot itself observed)."""

    __tablename__ = "role_worker_seen"

    horde_user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    online_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class SyncState:
    cursor: int
    pass_started_at: datetime | None
    last_finished_at: datetime | None


@dataclass(frozen=True)
class RoleProblem:
    guild_id: int
    role_id: int
    reason: str
    noted_at: datetime


class RolesRepository:
    MEMBER_DATA = MemberData(
        keeps={
            "role_sync_state.cursor": "where the background role sync is (the last id it handled): a "
            "position in a list, not data about that member; it moves on with the next page",
        }
    )

    def __init__(self, db: Database, scope: str = ALL_SERVERS) -> None:
        self._db = db
        self._scope = scope  # this process's shard set (`ShardScope.key`)

    # --- sync state ------------------------------------------------------------------------------------

    async def sync_state(self) -> SyncState:
        async with self._db.session() as session:
            row = await session.scalar(select(RoleSyncStateRow).where(RoleSyncStateRow.scope == self._scope))
            if row is None:
                return SyncState(cursor=0, pass_started_at=None, last_finished_at=None)
            return SyncState(row.cursor, row.pass_started_at, row.last_finished_at)

    async def save_sync_state(self, state: SyncState) -> None:
        async with self._db.session() as session:
            row = await session.scalar(select(RoleSyncStateRow).where(RoleSyncStateRow.scope == self._scope))
            if row is None:
                last = await session.scalar(select(func.max(RoleSyncStateRow.id)))
                session.add(
                    RoleSyncStateRow(
                        id=(last or 0) + 1,
                        scope=self._scope,
                        cursor=state.cursor,
                        pass_started_at=state.pass_started_at,
                        last_finished_at=state.last_finished_at,
                    )
                )
            else:
                row.cursor = state.cursor
                row.pass_started_at = state.pass_started_at
                row.last_finished_at = state.last_finished_at

    # --- problems --------------------------------------------------------------------------------------

    async def problems(self) -> list[RoleProblem]:
        """Every remembered problem: a few per misconfigured guild, so loading them all is bounded."""
        async with self._db.session() as session:
            rows = await session.scalars(select(RoleProblemRow))
            return [RoleProblem(r.guild_id, r.role_id, r.reason, r.noted_at) for r in rows]

    async def save_problem(self, problem: RoleProblem) -> None:
        async with self._db.session() as session:
            row = await session.get(RoleProblemRow, (problem.guild_id, problem.role_id))
            if row is None:
                session.add(
                    RoleProblemRow(
                        guild_id=problem.guild_id,
                        role_id=problem.role_id,
                        reason=problem.reason,
                        noted_at=problem.noted_at,
                    )
                )
            else:
                row.reason = problem.reason
                row.noted_at = problem.noted_at

    async def clear_problem(self, guild_id: int, role_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(
                delete(RoleProblemRow).where(
                    RoleProblemRow.guild_id == guild_id, RoleProblemRow.role_id == role_id
                )
            )

    # --- workers seen online ---------------------------------------------------------------------------

    async def worker_seen(self, horde_user_id: int) -> datetime | None:
        async with self._db.session() as session:
            row = await session.get(WorkerSeenRow, horde_user_id)
            return row.online_at if row is not None else None

    async def mark_worker_seen(self, horde_user_id: int, when: datetime) -> None:
        async with self._db.session() as session:
            row = await session.get(WorkerSeenRow, horde_user_id)
            if row is None:
                session.add(WorkerSeenRow(horde_user_id=horde_user_id, online_at=when))
            else:
                row.online_at = when
