"""Per-guild settings documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.db.database import Database, upsert
from bot.db.models import GuildSettingsRow


class GuildSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            return dict(row.data) if row is not None else {}

    async def save(self, guild_id: int, data: dict[str, Any], now: datetime) -> None:
        """Insert or replace the document in one statement (`INSERT ... ON CONFLICT DO UPDATE`, on SQLite
        and PostgreSQL): two first saves for a new guild can't both try to insert."""
        async with self._db.session() as session:
            stmt = upsert(session, GuildSettingsRow).values(
                guild_id=guild_id, data=dict(data), updated_at=now
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["guild_id"],
                    set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
                )
            )
