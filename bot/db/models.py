"""ORM tables. Each feature adds its tables here and a migration under `migrations/versions/`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.db.types import UTCDateTime


class Base(DeclarativeBase):
    pass


class User(Base):
    """A Discord member who linked an AI Horde account."""

    __tablename__ = "users"

    discord_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    horde_user_id: Mapped[int] = mapped_column(Integer, index=True)
    horde_username: Mapped[str] = mapped_column(String(255))
    api_key_encrypted: Mapped[str] = mapped_column(Text)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class GuildSettingsRow(Base):
    """Per-guild settings as one JSON document: features add keys without schema changes;
    `bot.services.guild_settings` owns the typed view and validation."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
