"""Tables and repository of shared keys: members' own (`shared_keys`) and servers' (`guild_shared_keys`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime


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
