"""/about: what this bot is and how it is doing (version, servers, linked members, jobs in flight, uptime,
the Horde it talks to). Plain figures; the cog renders them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot import __version__
from bot.clock import Clock
from bot.config import RetentionSettings
from bot.db.users import UserRepository


@dataclass(frozen=True)
class AboutInfo:
    version: str
    servers: int
    linked_members: int
    jobs_in_flight: int
    uptime_seconds: float
    horde_url: str


class AboutService:
    def __init__(
        self,
        users: UserRepository,
        clock: Clock,
        horde_url: str,
        in_flight: list[Callable[[], int]],
        retention: RetentionSettings,
    ) -> None:
        self._users = users
        self._clock = clock
        self._horde_url = horde_url
        self._retention = retention
        # One counter per kind of Horde work (images, alchemy, text): jobs the bot is polling right now.
        self._in_flight = in_flight
        self._started = clock.monotonic()

    @property
    def horde_url(self) -> str:
        """The AI Horde this bot talks to (its API URL; /terms links the site's terms)."""
        return self._horde_url

    @property
    def retention(self) -> RetentionSettings:
        """How long this bot keeps each kind of row, as its operator configured it (/terms says so)."""
        return self._retention

    async def info(self, *, servers: int) -> AboutInfo:
        return AboutInfo(
            version=__version__,
            servers=servers,
            linked_members=await self._users.count(),
            jobs_in_flight=sum(count() for count in self._in_flight),
            uptime_seconds=max(0.0, self._clock.monotonic() - self._started),
            horde_url=self._horde_url,
        )


def uptime_text(seconds: float) -> str:
    """`3 d 4 h`, `2 h 5 min`, `7 min`, `40 s`."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
