"""Every encrypted value the bot stores, for `python run.py rotate-keys`: members' API keys, shared keys,
party keys and the interaction tokens kept with jobs in flight.

Paged by primary key, and each value replaced only if it is still the one read (a conditional UPDATE), so
rotating while the bot runs never overwrites a key a member just linked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from bot.db.alchemy_text_jobs import HordeJobRow
from bot.db.database import Database
from bot.db.generation import GenerationJobRow
from bot.db.models import User
from bot.db.parties import PartyRow
from bot.db.sharedkeys import GuildSharedKeyRow, SharedKeyRow


@dataclass(frozen=True)
class EncryptedColumn:
    name: str
    key: InstrumentedAttribute[Any]
    value: InstrumentedAttribute[str] | InstrumentedAttribute[str | None]  # nullable: a party without a key


ENCRYPTED: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("users.api_key_encrypted", User.discord_id, User.api_key_encrypted),
    EncryptedColumn("shared_keys.key_encrypted", SharedKeyRow.id, SharedKeyRow.key_encrypted),
    EncryptedColumn(
        "guild_shared_keys.key_encrypted", GuildSharedKeyRow.guild_id, GuildSharedKeyRow.key_encrypted
    ),
    EncryptedColumn("kudos_parties.key_encrypted", PartyRow.id, PartyRow.key_encrypted),
    # A job's command token (`bot.services.jobs.replies`): unreadable after the old key is dropped, the
    # process delivering the job could no longer find or edit the command's reply.
    EncryptedColumn("generation_jobs.reply_token", GenerationJobRow.id, GenerationJobRow.reply_token),
    EncryptedColumn("alchemy_text_jobs.reply_token", HordeJobRow.id, HordeJobRow.reply_token),
)


class KeyRotationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, column: EncryptedColumn, after: Any, limit: int) -> list[tuple[Any, str]]:
        async with self._db.session() as session:
            query = (
                select(column.key, column.value)
                .where(column.value.is_not(None))  # a party without a key, a job without a token
                .order_by(column.key)
                .limit(limit)
            )
            if after is not None:
                query = query.where(column.key > after)
            return [(row[0], row[1]) for row in (await session.execute(query)).all()]

    async def replace(self, column: EncryptedColumn, key: Any, old: str, new: str) -> bool:
        async with self._db.session() as session:
            result = await session.execute(
                update(column.key.class_)
                .where(column.key == key, column.value == old)
                .values({column.value: new})
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]
