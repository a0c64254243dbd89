"""What both Horde-job repositories do to a job this process holds (image generations in
`bot.db.generation`; alchemy and text jobs in `bot.db.alchemy_text_jobs`): each change is one UPDATE
conditional on the lease, so a process that lost the job to another changes nothing and is told so."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import String, Text, and_, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.database import Database
from bot.db.leases import LeasedRows
from bot.db.types import UTCDateTime

# Every state in which a job is still someone's work: stated once, here where it is stored and queried, and
# read by the engine whose lifecycle it is (bot.services.jobs.engine).
ACTIVE_STATES = ("queued", "submitting", "waiting", "cancelling", "delivering")


# What `finish` also writes: a job that ended needs its reply's token, and its pending ending, no more.
NO_REPLY: dict[str, Any] = {"reply_token": None, "reply_expires_at": None, "ending": None}


class ReplyColumns:
    """What whichever process delivers a job (after a restart or a takeover) needs to tell its member once:
    the interaction token of the command that asked for it, to read and edit the command's reply (a
    credential for 15 minutes: stored Fernet-encrypted by the service, `bot.crypto.KeyCipher.seal`, never
    logged, cleared when the job ends, `NO_REPLY`, and by the retention rule `<table>.reply_token` once
    expired), and, for a job ending without a result, how it ends."""

    reply_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    reply_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A job ending without a result while its member is told (`delivering`): the state it ends in.
    ending: Mapped[str | None] = mapped_column(String(16), nullable=True)


class HeldJobs:
    # The table's ORM class: `id`, `state`, `horde_id`, `interrupted_sends`, `updated_at` and the lease
    # columns. Any: the two tables share these columns, not a class that declares them.
    _row: ClassVar[Any]
    _db: Database
    leases: LeasedRows

    async def hold(self, job_id: int, now: datetime) -> bool:
        """Before a check: True while this process holds the job (lease renewed)."""
        return await self.leases.hold(job_id, now)

    async def set_state(self, job_id: int, state: str, now: datetime) -> bool:
        """Move a job this process holds (its lease renewed); False when another process took it over."""
        return await self._update_held(job_id, {"state": state, "updated_at": now, **self.leases.held(now)})

    async def cut_off(self, job_id: int, now: datetime) -> bool:
        """A job left `submitting` by a process that stopped (this process's, or one whose lease ran out and
        that this process now holds): `queued` again, the cut-off counted. False when it isn't held here."""
        t = self._row
        condition = and_(t.id == job_id, self.leases.mine(), t.state == "submitting", t.horde_id.is_(None))
        values = {
            "state": "queued",
            "interrupted_sends": t.interrupted_sends + 1,
            "updated_at": now,
            **self.leases.held(now),
        }
        async with self._db.session() as session:
            result = await session.execute(update(t).where(condition).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delivering(
        self, job_id: int, now: datetime, *, ending: str | None = None, error: str | None = None
    ) -> bool:
        """Its result is about to be posted (the lease kept meanwhile): True for the one process holding
        the job, which then posts and `finish`es it; False when another process took it over. A job ending
        without a result is `delivering` with its `ending` (and `error`) while its member is told."""
        values: dict[str, Any] = {"state": "delivering", "updated_at": now, **self.leases.held(now)}
        if ending is not None:
            values.update(ending=ending, error=error)
        return await self._update_held(job_id, values, active=True)

    async def keep_reply(self, job_id: int, sealed: str, expires_at: datetime, now: datetime) -> None:
        """The command's interaction token (encrypted), kept while the job is in flight: whichever process
        holds it, the one that got the command stores it (a job already ended needs none)."""
        t = self._row
        values = {"reply_token": sealed, "reply_expires_at": expires_at, "updated_at": now}
        async with self._db.session() as session:
            await session.execute(
                update(t).where(t.id == job_id, t.state.in_(ACTIVE_STATES)).values(**values)
            )

    async def _update_held(self, job_id: int, values: dict[str, Any], *, active: bool = False) -> bool:
        t = self._row
        condition = and_(t.id == job_id, self.leases.mine())
        if active:
            condition = and_(condition, t.state.in_(ACTIVE_STATES))
        async with self._db.session() as session:
            result = await session.execute(update(t).where(condition).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["ACTIVE_STATES", "NO_REPLY", "HeldJobs", "ReplyColumns"]
