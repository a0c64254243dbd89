"""Tables and repositories for alchemy and text jobs, /chat conversations and shared keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text, delete, select, update
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


class ChatSessionRow(Base):
    __tablename__ = "chat_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    thread_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(255))
    max_context_length: Mapped[int] = mapped_column(Integer)
    max_length: Mapped[int] = mapped_column(Integer)
    persona: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChatTurnRow(Base):
    __tablename__ = "chat_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8))  # "user" | "model"
    author_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    author_name: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SharedKeyRow(Base):
    """A shared key a member created through the bot (the key itself encrypted)."""

    __tablename__ = "shared_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class GuildSharedKeyRow(Base):
    """The shared key a guild's admins set for members who have not linked an account.

    Kept out of the guild settings document on purpose: that document is exported and imported as
    plain JSON, and a shared key is a secret."""

    __tablename__ = "guild_shared_keys"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    key_encrypted: Mapped[str] = mapped_column(Text)
    set_by: Mapped[int] = mapped_column(BigInteger)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- records handed to services ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class ChatSessionRecord:
    id: int
    guild_id: int | None
    thread_id: int
    owner_id: int
    model: str
    max_context_length: int
    max_length: int
    persona: str
    active: bool


def _session(row: ChatSessionRow) -> ChatSessionRecord:
    return ChatSessionRecord(
        id=row.id,
        guild_id=row.guild_id,
        thread_id=row.thread_id,
        owner_id=row.owner_id,
        model=row.model,
        max_context_length=row.max_context_length,
        max_length=row.max_length,
        persona=row.persona,
        active=row.active,
    )


@dataclass(frozen=True)
class ChatTurnRecord:
    id: int
    role: str
    author_name: str
    text: str


@dataclass(frozen=True)
class StoredSharedKey:
    id: int
    owner_id: int
    name: str
    key_encrypted: str
    created_at: datetime


@dataclass(frozen=True)
class GuildSharedKey:
    guild_id: int
    name: str
    key_encrypted: str
    set_by: int
    set_at: datetime


# --- repositories ------------------------------------------------------------------------------------


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


class ChatRepository:
    # A member's own conversations go whole (the other speakers' turns with them); their turns in other
    # members' conversations go one by one.
    MEMBER_DATA = MemberData(forgets=("chat_sessions.owner_id", "chat_turns.author_id"))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        guild_id: int | None,
        thread_id: int,
        owner_id: int,
        model: str,
        max_context_length: int,
        max_length: int,
        persona: str,
        now: datetime,
    ) -> ChatSessionRecord:
        async with self._db.session() as session:
            row = ChatSessionRow(
                guild_id=guild_id,
                thread_id=thread_id,
                owner_id=owner_id,
                model=model,
                max_context_length=max_context_length,
                max_length=max_length,
                persona=persona,
                active=True,
                created_at=now,
            )
            session.add(row)
            await session.flush()
            return _session(row)

    async def by_thread(self, thread_id: int) -> ChatSessionRecord | None:
        async with self._db.session() as session:
            row = await session.scalar(select(ChatSessionRow).where(ChatSessionRow.thread_id == thread_id))
            return _session(row) if row is not None else None

    async def get(self, session_id: int) -> ChatSessionRecord | None:
        async with self._db.session() as session:
            row = await session.get(ChatSessionRow, session_id)
            return _session(row) if row is not None else None

    async def set_active(self, session_id: int, active: bool) -> None:
        async with self._db.session() as session:
            row = await session.get(ChatSessionRow, session_id)
            if row is not None:
                row.active = active

    async def add_turn(
        self, session_id: int, role: str, author_id: int | None, author_name: str, text: str, now: datetime
    ) -> None:
        async with self._db.session() as session:
            session.add(
                ChatTurnRow(
                    session_id=session_id,
                    role=role,
                    author_id=author_id,
                    author_name=author_name[:100],
                    text=text,
                    created_at=now,
                )
            )

    async def turns(self, session_id: int, limit: int) -> list[ChatTurnRecord]:
        """The latest `limit` turns, oldest first."""
        async with self._db.session() as session:
            rows = list(
                await session.scalars(
                    select(ChatTurnRow)
                    .where(ChatTurnRow.session_id == session_id)
                    .order_by(ChatTurnRow.id.desc())
                    .limit(limit)
                )
            )
        return [ChatTurnRecord(r.id, r.role, r.author_name, r.text) for r in reversed(rows)]

    async def forget_member(self, owner_id: int) -> None:
        async with self._db.session() as session:
            ids = list(
                await session.scalars(select(ChatSessionRow.id).where(ChatSessionRow.owner_id == owner_id))
            )
            if ids:
                await session.execute(delete(ChatTurnRow).where(ChatTurnRow.session_id.in_(ids)))
                await session.execute(delete(ChatSessionRow).where(ChatSessionRow.id.in_(ids)))
            await session.execute(delete(ChatTurnRow).where(ChatTurnRow.author_id == owner_id))


class SharedKeyRepository:
    # The server's key stays (it belongs to the server); who set it is forgotten (0).
    MEMBER_DATA = MemberData(forgets=("shared_keys.owner_id", "guild_shared_keys.set_by"))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, owner_id: int, name: str, key_encrypted: str, now: datetime) -> StoredSharedKey:
        async with self._db.session() as session:
            row = SharedKeyRow(owner_id=owner_id, name=name, key_encrypted=key_encrypted, created_at=now)
            session.add(row)
            await session.flush()
            return StoredSharedKey(row.id, row.owner_id, row.name, row.key_encrypted, row.created_at)

    async def of_owner(self, owner_id: int) -> list[StoredSharedKey]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(SharedKeyRow).where(SharedKeyRow.owner_id == owner_id).order_by(SharedKeyRow.id)
            )
            return [StoredSharedKey(r.id, r.owner_id, r.name, r.key_encrypted, r.created_at) for r in rows]

    async def delete(self, key_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(delete(SharedKeyRow).where(SharedKeyRow.id == key_id))

    async def forget_member(self, owner_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(delete(SharedKeyRow).where(SharedKeyRow.owner_id == owner_id))
            await session.execute(
                update(GuildSharedKeyRow).where(GuildSharedKeyRow.set_by == owner_id).values(set_by=0)
            )

    async def guild_key(self, guild_id: int) -> GuildSharedKey | None:
        async with self._db.session() as session:
            row = await session.get(GuildSharedKeyRow, guild_id)
            if row is None:
                return None
            return GuildSharedKey(row.guild_id, row.name, row.key_encrypted, row.set_by, row.set_at)

    async def set_guild_key(
        self, guild_id: int, name: str, key_encrypted: str, set_by: int, now: datetime
    ) -> None:
        async with self._db.session() as session:
            row = await session.get(GuildSharedKeyRow, guild_id)
            if row is None:
                session.add(
                    GuildSharedKeyRow(
                        guild_id=guild_id, name=name, key_encrypted=key_encrypted, set_by=set_by, set_at=now
                    )
                )
            else:
                row.name = name
                row.key_encrypted = key_encrypted
                row.set_by = set_by
                row.set_at = now

    async def clear_guild_key(self, guild_id: int) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                delete(GuildSharedKeyRow).where(GuildSharedKeyRow.guild_id == guild_id)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]
