"""Linked accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from bot.db.database import Database
from bot.db.member_data import MemberData
from bot.db.models import User


@dataclass(frozen=True)
class LinkedUser:
    discord_id: int
    horde_user_id: int
    horde_username: str
    api_key_encrypted: str
    linked_at: datetime


def _to_linked(row: User) -> LinkedUser:
    return LinkedUser(
        discord_id=row.discord_id,
        horde_user_id=row.horde_user_id,
        horde_username=row.horde_username,
        api_key_encrypted=row.api_key_encrypted,
        linked_at=row.linked_at,
    )


class UserRepository:
    # The link itself: deleted first by /logout (`delete`).
    MEMBER_DATA = MemberData(forgets=("users.discord_id",))

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, discord_id: int) -> LinkedUser | None:
        async with self._db.session() as session:
            row = await session.get(User, discord_id)
            return _to_linked(row) if row is not None else None

    async def get_many(self, discord_ids: list[int]) -> dict[int, LinkedUser]:
        if not discord_ids:
            return {}
        async with self._db.session() as session:
            rows = await session.scalars(select(User).where(User.discord_id.in_(discord_ids)))
            return {row.discord_id: _to_linked(row) for row in rows}

    async def upsert(
        self,
        *,
        discord_id: int,
        horde_user_id: int,
        horde_username: str,
        api_key_encrypted: str,
        linked_at: datetime,
    ) -> None:
        async with self._db.session() as session:
            row = await session.get(User, discord_id)
            if row is None:
                session.add(
                    User(
                        discord_id=discord_id,
                        horde_user_id=horde_user_id,
                        horde_username=horde_username,
                        api_key_encrypted=api_key_encrypted,
                        linked_at=linked_at,
                    )
                )
            else:
                row.horde_user_id = horde_user_id
                row.horde_username = horde_username
                row.api_key_encrypted = api_key_encrypted
                row.linked_at = linked_at

    async def update_username(self, discord_id: int, horde_username: str) -> None:
        async with self._db.session() as session:
            row = await session.get(User, discord_id)
            if row is not None:
                row.horde_username = horde_username

    async def delete(self, discord_id: int) -> bool:
        async with self._db.session() as session:
            result = await session.execute(delete(User).where(User.discord_id == discord_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def count(self) -> int:
        """How many members have linked an account (for /about)."""
        async with self._db.session() as session:
            return int((await session.execute(select(func.count()).select_from(User))).scalar_one())

    async def iter_page(self, after_discord_id: int, limit: int) -> list[LinkedUser]:
        """Linked users in id order after a cursor: bounded memory for background sweeps."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(User).where(User.discord_id > after_discord_id).order_by(User.discord_id).limit(limit)
            )
            return [_to_linked(row) for row in rows]
