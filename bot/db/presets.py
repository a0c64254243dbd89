"""Generation presets: named sets of /generate options, a member's own or a server's.

Rows live until deleted (`/preset delete`); a member's own presets are deleted at /logout
(`forget_member`). A server's presets hold no member id, so nothing about a member stays in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement, and_

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

Scope = Literal["member", "guild"]


class PresetRow(Base):
    __tablename__ = "generation_presets"
    __table_args__ = (UniqueConstraint("scope", "owner_id", "name_key", name="uq_generation_presets_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8))  # member | guild
    owner_id: Mapped[int] = mapped_column(BigInteger)  # the member's Discord id, or the guild's
    name: Mapped[str] = mapped_column(String(50))
    name_key: Mapped[str] = mapped_column(String(50))  # casefolded: names are unique without case
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Preset:
    scope: Scope
    owner_id: int
    name: str
    options: dict[str, Any]
    updated_at: datetime


def _preset(row: PresetRow) -> Preset:
    scope: Scope = "guild" if row.scope == "guild" else "member"
    return Preset(scope, row.owner_id, row.name, dict(row.options or {}), row.updated_at)


def _named(scope: Scope, owner_id: int, name_key: str) -> ColumnElement[bool]:
    """The condition that picks one preset: whose it is, and its name without case."""
    return and_(PresetRow.scope == scope, PresetRow.owner_id == owner_id, PresetRow.name_key == name_key)


class PresetRepository:
    # A member's presets go at /logout; a server's (scope "guild") hold the guild's id, not a member's.
    MEMBER_DATA = MemberData(forgets=("generation_presets.owner_id",))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(
        self, scope: Scope, owner_id: int, name: str, options: dict[str, Any], now: datetime
    ) -> bool:
        """Insert or replace; True if it replaced an existing preset of that name."""
        async with self._db.session() as session:
            row = (
                await session.execute(select(PresetRow).where(_named(scope, owner_id, name.casefold())))
            ).scalar_one_or_none()
            if row is not None:
                row.name, row.options, row.updated_at = name, options, now
                return True
            session.add(
                PresetRow(
                    scope=scope,
                    owner_id=owner_id,
                    name=name,
                    name_key=name.casefold(),
                    options=options,
                    created_at=now,
                    updated_at=now,
                )
            )
            return False

    async def count(self, scope: Scope, owner_id: int) -> int:
        async with self._db.session() as session:
            found = await session.execute(
                select(func.count()).where(PresetRow.scope == scope, PresetRow.owner_id == owner_id)
            )
            return int(found.scalar_one())

    async def get(self, scope: Scope, owner_id: int, name: str) -> Preset | None:
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(PresetRow).where(_named(scope, owner_id, name.strip().casefold()))
                )
            ).scalar_one_or_none()
            return _preset(row) if row is not None else None

    async def listing(self, scope: Scope, owner_id: int) -> list[Preset]:
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(PresetRow)
                    .where(PresetRow.scope == scope, PresetRow.owner_id == owner_id)
                    .order_by(PresetRow.name_key)
                )
            ).scalars()
            return [_preset(row) for row in rows]

    async def delete(self, scope: Scope, owner_id: int, name: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                delete(PresetRow).where(_named(scope, owner_id, name.strip().casefold()))
            )
            return bool(getattr(result, "rowcount", 0))

    async def forget_member(self, discord_id: int) -> None:
        """At /logout: the member's own presets go."""
        async with self._db.session() as session:
            await session.execute(
                delete(PresetRow).where(PresetRow.scope == "member", PresetRow.owner_id == discord_id)
            )
