"""Who is linked to a Horde account, as the kudos feature asks it: again and again in a storm of reactions,
for the same few members. Remembered for a few minutes; /login and /logout forget a member at once."""

from __future__ import annotations

import asyncio

from bot.clock import Clock
from bot.db.group_commit import GroupCommit
from bot.db.users import LinkedUser
from bot.services.accounts import AccountService

LINK_CACHE_SECONDS = 300.0  # how long a member's link (or its absence) is remembered between hooks
LINK_CACHE_SIZE = 10_000


class MemberLinks:
    def __init__(self, accounts: AccountService, clock: Clock) -> None:
        self._accounts = accounts
        self._clock = clock
        self._cache: dict[int, tuple[float, LinkedUser | None]] = {}
        self._lookups: dict[int, asyncio.Future[LinkedUser | None]] = {}
        self._reads: GroupCommit[int, LinkedUser | None] = GroupCommit()

    async def get(self, discord_id: int) -> LinkedUser | None:
        """`AccountService.linked`, remembered for `LINK_CACHE_SECONDS`."""
        now = self._clock.monotonic()
        cached = self._cache.get(discord_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        # One query per member however many of their reactions arrive at once (a storm's first second).
        pending = self._lookups.get(discord_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LinkedUser | None] = asyncio.get_running_loop().create_future()
        self._lookups[discord_id] = future
        try:
            # Members first seen together (a storm's first second) are read in one query.
            linked = await self._reads.submit(discord_id, self._read)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters (if any) raise it themselves
            raise
        finally:
            # A link or unlink that happened meanwhile took the lookup away: its answer may be older.
            current = self._lookups.get(discord_id) is future
            if current:
                del self._lookups[discord_id]
        future.set_result(linked)
        if current:
            self._cache[discord_id] = (now + LINK_CACHE_SECONDS, linked)
            if len(self._cache) > LINK_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        return linked

    async def _read(self, discord_ids: list[int]) -> list[LinkedUser | None]:
        found = await self._accounts.linked_many(list(dict.fromkeys(discord_ids)))
        return [found.get(discord_id) for discord_id in discord_ids]

    def linked_now(self, discord_id: int) -> None:
        """The member just linked an account: the next question reads it."""
        self._lookups.pop(discord_id, None)
        self._cache.pop(discord_id, None)

    def unlinked(self, discord_id: int) -> None:
        """The member just unlinked: not linked, without a query, for the next few minutes."""
        self._lookups.pop(discord_id, None)
        self._cache[discord_id] = (self._clock.monotonic() + LINK_CACHE_SECONDS, None)


__all__ = ["LINK_CACHE_SECONDS", "MemberLinks"]
