"""img2img source images, kept apart from job rows and bounded.

A job row keeps only `source_id`. The source is what Regenerate needs to repeat an img2img request (the
first submission sends it straight from memory), so it is kept a short time (`retention.img2img_sources`
days after its last use) and within a total size (`retention.img2img_sources_max_mib`, oldest evicted
first). Stored as the prepared image bytes (WebP), not base64. The same image sent again by the same member
is stored once. `/logout` deletes the member's sources.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database, upsert
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime


class SourceImageRow(Base):
    __tablename__ = "image_sources"
    __table_args__ = (
        Index("uq_image_sources_owner_digest", "owner_id", "digest", unique=True),
        Index("ix_image_sources_last_used", "last_used_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime())


async def store_source(session: AsyncSession, owner_id: int, data: bytes, now: datetime) -> int:
    """Store (or refresh) a source in `session`'s transaction; returns its id. Kept only if that
    transaction commits: a job stored with its source (`GenerationJobRepository.create`) and refused in
    the same transaction leaves none. The caller evicts beyond the bound after the commit."""
    digest = hashlib.sha256(data).hexdigest()
    stmt = (
        upsert(session, SourceImageRow)
        .values(
            owner_id=owner_id,
            digest=digest,
            size=len(data),
            data=data,
            created_at=now,
            last_used_at=now,
        )
        .on_conflict_do_update(index_elements=["owner_id", "digest"], set_={"last_used_at": now})
        .returning(SourceImageRow.id)
    )
    return int((await session.execute(stmt)).scalar_one())


class SourceImageStore:
    MEMBER_DATA = MemberData(forgets=("image_sources.owner_id",))

    def __init__(self, db: Database, *, max_bytes: int) -> None:
        self._db = db
        self.max_bytes = max_bytes

    async def put(self, owner_id: int, data: bytes, now: datetime) -> int:
        """Store (or refresh) a source; returns its id. Evicts the least recently used beyond the bound."""
        async with self._db.session() as session:
            source_id = await store_source(session, owner_id, data, now)
        await self.evict_over_bound(keep=source_id)
        return source_id

    async def get(self, source_id: int, now: datetime | None = None) -> bytes | None:
        """The source's bytes, or None once it is gone (retention, the bound, /logout)."""
        async with self._db.session() as session:
            data = await session.scalar(select(SourceImageRow.data).where(SourceImageRow.id == source_id))
            if data is not None and now is not None:
                await session.execute(
                    update(SourceImageRow).where(SourceImageRow.id == source_id).values(last_used_at=now)
                )
            return data

    async def total_bytes(self) -> int:
        async with self._db.session() as session:
            return int(await session.scalar(select(func.coalesce(func.sum(SourceImageRow.size), 0))) or 0)

    async def evict_over_bound(self, *, keep: int | None = None, batch: int = 50) -> int:
        """Delete the least recently used sources while the total is over `max_bytes`."""
        removed = 0
        while True:
            total = await self.total_bytes()
            if total <= self.max_bytes:
                return removed
            async with self._db.session() as session:
                query = select(SourceImageRow.id, SourceImageRow.size).order_by(
                    SourceImageRow.last_used_at, SourceImageRow.id
                )
                if keep is not None:
                    query = query.where(SourceImageRow.id != keep)
                victims: list[int] = []
                for source_id, size in (await session.execute(query.limit(batch))).all():
                    if total <= self.max_bytes:
                        break
                    victims.append(source_id)
                    total -= size
                if not victims:
                    return removed
                await session.execute(delete(SourceImageRow).where(SourceImageRow.id.in_(victims)))
                removed += len(victims)

    async def forget_member(self, owner_id: int) -> None:
        async with self._db.session() as session:
            await session.execute(delete(SourceImageRow).where(SourceImageRow.owner_id == owner_id))
