"""Per-guild settings documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.db.database import Database
from bot.db.models import GuildSettingsRow


class GuildSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            return dict(row.data) if row is not None else {}

    async def save(self, guild_id: int, data: dict[str, Any], now: datetime) -> None:
        async with self._db.session() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            if row is None:
                session.add(GuildSettingsRow(guild_id=guild_id, data=dict(data), updated_at=now))
            else:
                # A new dict object: SQLAlchemy does not see in-place mutation of a JSON column.
                row.data = dict(data)
                row.updated_at = now
