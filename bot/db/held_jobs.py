"""What both Horde-job repositories do to a job this process holds (image generations in
`bot.db.generation`; alchemy and text jobs in `bot.db.alchemy_text_jobs`): each change is one UPDATE
conditional on the lease, so a process that lost the job to another changes nothing and is told so."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import and_, update

from bot.db.database import Database
from bot.db.leases import LeasedRows

# Every state in which a job is still someone's work: stated once, here where it is stored and queried, and
# read by the engine whose lifecycle it is (bot.services.jobs.engine).
ACTIVE_STATES = ("queued", "submitting", "waiting", "cancelling", "delivering")


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

    async def delivering(self, job_id: int, now: datetime) -> bool:
        """Its result is about to be posted (the lease kept meanwhile): True for the one process holding
        the job, which then posts and `finish`es it; False when another process took it over."""
        values = {"state": "delivering", "updated_at": now, **self.leases.held(now)}
        return await self._update_held(job_id, values, active=True)

    async def _update_held(self, job_id: int, values: dict[str, Any], *, active: bool = False) -> bool:
        t = self._row
        condition = and_(t.id == job_id, self.leases.mine())
        if active:
            condition = and_(condition, t.state.in_(ACTIVE_STATES))
        async with self._db.session() as session:
            result = await session.execute(update(t).where(condition).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["ACTIVE_STATES", "HeldJobs"]
