"""The lease keeper: this process's claims on shared work stay alive, and a dead process's work moves here.

One per process (built in `bot.app`), on the scheduler: every third of `database.lease_seconds` it renews
every lease this process holds (one UPDATE per table of shared work, `bot.db.leases`), then asks whether
any shared work waits for a holder (its process stopped renewing: crashed, killed, cut off). If so it
tells `on_unheld`: each kind of work listens while it runs and takes the rows over through its own restart
path (the job engine's `resume`, the kudos queue's `drain`, the ratings' `resume`), so a takeover is a
restart of that work, nothing else.

A clean shutdown hands every claim back at once (`release`), so the other processes need not wait out
the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from bot.clock import Clock
from bot.db.leases import Lease, LeasedRows
from bot.hooks import Hook
from bot.scheduler import ScheduledCall, Scheduler

log = logging.getLogger(__name__)

# Whether some work of one kind waits for a holder (a repository's `unheld(now)`).
UnheldFn = Callable[[datetime], Awaitable[bool]]


class LeaseKeeper:
    def __init__(
        self,
        lease: Lease,
        tables: Sequence[LeasedRows],
        unheld: Sequence[UnheldFn],
        scheduler: Scheduler,
        clock: Clock,
    ) -> None:
        self.lease = lease
        self._tables = list(tables)
        self._unheld = list(unheld)
        self._scheduler = scheduler
        self._clock = clock
        self._handle: ScheduledCall | None = None
        # Told when shared work waits for a holder: each kind takes its rows over (its resume).
        self.on_unheld: Hook[[], object] = Hook("leases.on_unheld")

    @property
    def interval(self) -> float:
        """Renewals come three times per lease: one late tick (a busy loop, a slow query) loses nothing."""
        return self.lease.seconds / 3

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._scheduler.every(
                "leases", self.interval, self.keep, initial_delay=self.interval
            )

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def keep(self) -> None:
        """One pass: renew, then hand over work whose holder is gone."""
        now = self._clock.now()
        for table in self._tables:
            await table.renew(now)
        for unheld in self._unheld:
            if await unheld(now):
                log.info(
                    "shared work waits for a new holder: taking it over (this process: %s)", self.lease.holder
                )
                await self.on_unheld.emit()
                return

    async def release(self) -> None:
        """A clean shutdown: every claim of this process is handed back (best effort: a lease that stays
        simply runs out)."""
        for table in self._tables:
            try:
                await table.release_all()
            except Exception:
                log.warning("releasing the leases on %s failed", table.table.name, exc_info=True)
