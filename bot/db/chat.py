"""Tables and repository of /chat conversations (`chat_sessions`, `chat_turns`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime


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
