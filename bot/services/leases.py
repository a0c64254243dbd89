"""The lease keeper: this process's claims on shared work stay alive, and a dead process's work moves here.

One per process (built in `bot.app`), on the scheduler: every third of `database.lease_seconds` it renews
every lease this process holds (one UPDATE per table of shared work, `bot.db.leases`), then asks whether
any shared work waits for a holder (its process stopped renewing: crashed, killed, cut off). If so it
tells `on_unheld`: each kind of work listens while it runs and takes the rows over through its own restart
path (the job engine's `resume`, the kudos queue's `drain`, the ratings' `resume`), so a takeover is a
restart of that work, nothing else.

A clean shutdown hands every claim back at once (`release`), so the other processes need not wait out
the lease.

A process alone on its database (`Database.alone`: SQLite, whose file is locked to one process) has
nobody to keep its claims from and nobody who could leave work behind while it runs: the keeper runs
only while another process's work is in the database (a predecessor that died with its leases still
running), and stops once a pass finds none.

Every process judges leases by its own host's wall clock. Where the processes share a PostgreSQL database,
each renewal also compares this host's clock with the database server's, and warns (once, and again only
after it was back in step) when they differ by more than a third of a lease: a host out of step takes work
over early or late. Only a clock that is the host's (`Clock.host_time`) is compared: tests move theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.db.leases import Lease, LeasedRows
from bot.hooks import Hook
from bot.scheduler import ScheduledCall, Scheduler

log = logging.getLogger(__name__)

# Whether some work of one kind waits for a holder (a repository's `unheld(now)`).
UnheldFn = Callable[[datetime], Awaitable[bool]]
# The database server's clock (`bot.db.leases.database_time`).
DatabaseTimeFn = Callable[[], Awaitable[datetime]]


class LeaseKeeper:
    def __init__(
        self,
        lease: Lease,
        tables: Sequence[LeasedRows],
        unheld: Sequence[UnheldFn],
        scheduler: Scheduler,
        clock: Clock,
        database_time: DatabaseTimeFn | None = None,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        """`database_time`: the shared database's clock, to compare this host's with (None: no check; the
        factory passes it on PostgreSQL when the clock is the host's). `alone`: whether no other process
        can use the database while this one runs (`Database.alone`, known once it is connected)."""
        self.lease = lease
        self._alone = alone
        self._tables = list(tables)
        self._unheld = list(unheld)
        self._scheduler = scheduler
        self._clock = clock
        self._handle: ScheduledCall | None = None
        self._database_time = database_time
        self._out_of_step = False  # warned, not yet back in step
        # Told when shared work waits for a holder: each kind takes its rows over (its resume).
        self.on_unheld: Hook[[], object] = Hook("leases.on_unheld")

    @property
    def interval(self) -> float:
        """Renewals come three times per lease: one late tick (a busy loop, a slow query) loses nothing."""
        return self.lease.seconds / 3

    @property
    def takeover(self) -> timedelta:
        """How late after a process's last renewal its work is taken over at most: its leases run out after
        a lease, another process's next pass (an `interval`) notices, and the two hosts' clocks may differ
        by up to a third of a lease before `_check_clock` warns."""
        return timedelta(seconds=self.lease.seconds + self.interval + self.lease.seconds / 3)

    @property
    def running(self) -> bool:
        return self._handle is not None

    async def start(self) -> None:
        """Keep the leases every `interval` (safe to call twice): not at all for a process alone on its
        database with nobody else's work in it."""
        if self._handle is None and not await self._nothing_to_keep():
            self._handle = self._scheduler.every(
                "leases", self.interval, self.keep, initial_delay=self.interval
            )

    async def _nothing_to_keep(self) -> bool:
        """Alone on the database, no other process's work in it: none can appear while this one runs."""
        if not self._alone():
            return False
        for table in self._tables:
            if await table.held_elsewhere():
                return False
        return True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def keep(self) -> None:
        """One pass: renew, then hand over work whose holder is gone."""
        now = self._clock.now()
        for table in self._tables:
            await table.renew(now)
        if self._database_time is not None:
            await self._check_clock()
        for unheld in self._unheld:
            if await unheld(now):
                log.info(
                    "shared work waits for a new holder: taking it over (this process: %s)", self.lease.holder
                )
                await self.on_unheld.emit()
                return
        if await self._nothing_to_keep():
            log.info("no other process's work is left in the database: lease keeping stops")
            self.stop()

    async def _check_clock(self) -> None:
        """Compare this host's wall clock with the database server's. The round trip's middle is taken as
        the moment the database read its clock; half the round trip is the measurement's margin, so a slow
        answer never reads as a skew."""
        assert self._database_time is not None
        before = self._clock.now()
        theirs = await self._database_time()
        after = self._clock.now()
        ours = before + (after - before) / 2
        drift = (ours - theirs).total_seconds()
        tolerance = self.lease.seconds / 3
        if abs(drift) - (after - before).total_seconds() / 2 > tolerance:
            if not self._out_of_step:
                self._out_of_step = True
                log.warning(
                    "this host's clock is %s the database server's by %.0f s (more than a third of "
                    "database.lease_seconds, %.0f s): leases may be taken over early or late. Sync this "
                    "host's clock (NTP).",
                    "ahead of" if drift > 0 else "behind",
                    abs(drift),
                    tolerance,
                )
        elif self._out_of_step and abs(drift) <= tolerance:
            self._out_of_step = False
            log.info("this host's clock is back in step with the database server's (%+.1f s)", drift)

    async def release(self) -> None:
        """A clean shutdown: every claim of this process is handed back (best effort: a lease that stays
        simply runs out)."""
        for table in self._tables:
            try:
                await table.release_all()
            except Exception:
                log.warning("releasing the leases on %s failed", table.table.name, exc_info=True)
