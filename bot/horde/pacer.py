"""One pacer for every POST that creates Horde work: the bot keeps to the Horde's limits instead of
meeting them.

All of the bot's members share its one IP, so the Horde's per-IP limits are the bot's (API_NOTES §3):
`POST /generate/async` and `POST /generate/text/async` allow 2 a second per IP and 2 a second per API key
(each path its own bucket), `POST /interrogate/async` the default 90 a minute per IP, and
`POST /kudos/transfer` 1 a second (and 90 an hour) per key. `HordeClient` asks the pacer before each such
POST (`acquire`), so no caller can forget it; callers wait in line, first come first served, and are
never refused for the bot's own pace.

Each limit is counted as a sliding window on the bot's monotonic clock, with `margin` seconds of slack
per window. The Horde counts a request when it arrives, which the bot can't see: somewhere between the
slot being granted and the Horde's answer. A slot granted long before its bytes leave (a database write,
a source image read back, a busy event loop) and counted from the grant would let a later POST land in
the same window of the Horde's (a 429). So a slot counts from the moment its answer came back (`landed`,
which `HordeClient` calls for every paced request; until then it is in flight and holds its place as if
it landed just now): the next POST in its window goes out at least `per + margin` after the Horde had
counted it. A 429 from the Horde's
limiter all the same (another process on the same IP, clock skew) holds the whole kind back (`hold`):
`Retry-After` when it is positive, else until `X-RateLimit-Reset`, and at least to the next second (a
`Retry-After: 0` means the window ends within this second; retrying at once is refused again).

Two ways in: `await acquire(kind, key)` waits in line (what `HordeClient` does for every paced POST);
`try_acquire(kind, key)` takes a slot only if one is free now, for a caller that keeps its own line and
sends from scheduler ticks (the generation queue, whose members see their place in line), and then
passes `acquired=True` to the client. Either way the client calls `landed(kind, key)` when the answer
(or the failure) is in; a caller that took a slot and then sends nothing calls it too. A slot nobody
lands (a bug) is counted as landed `flight_timeout` seconds after its grant, so it can't block a kind.

Kudos transfers: `HordeClient.transfer_kudos` waits in the "kudos" line; a caller that schedules gifts
can ask `next_free("kudos", key_id(apikey))` how long a key's slot is taken.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from bot.clock import Clock
from bot.config_model import SECTION_CONFIG, Float, Int, Section

Kind = Literal["image", "text", "alchemy", "kudos"]
KINDS: tuple[Kind, ...] = ("image", "text", "alchemy", "kudos")


@dataclass(frozen=True)
class Limit:
    """At most `count` sends in any `per` seconds, counted for the whole bot (`per_key` False: the IP)
    or for each API key."""

    count: int
    per: float
    per_key: bool = False


@pydantic_dataclass(frozen=True, config=SECTION_CONFIG)
class PacerSettings(Section, section="horde_pacer"):
    """Every POST that creates Horde work (images, text, alchemy, kudos transfers) waits its turn in one
    pacer, first come first served: the bot keeps to the Horde's limits for its one IP and for each API key
    instead of meeting them, and never refuses a member for its own pace. A 429 from the Horde's limiter all
    the same holds that kind of POST back for its `Retry-After`, or, when that is 0 or missing, until
    `X-RateLimit-Reset` and at least to the next second."""

    image_per_second: Int = Field(
        default=2,
        ge=1,
        le=60,
        description="`POST /generate/async` per second, for the bot's IP and for each key (the Horde "
        "allows 2).",
    )
    text_per_second: Int = Field(
        default=2,
        ge=1,
        le=60,
        description="`POST /generate/text/async` per second, for the bot's IP and for each key "
        "(the Horde allows 2).",
    )
    alchemy_per_minute: Int = Field(
        default=90,
        ge=1,
        le=3000,
        description="`POST /interrogate/async` per minute for the bot's IP (the Horde allows 90).",
    )
    kudos_per_second: Int = Field(
        default=1,
        ge=1,
        le=60,
        description="`POST /kudos/transfer` per second for each key (the Horde allows 1).",
    )
    kudos_per_hour: Int = Field(
        default=90,
        ge=1,
        le=36000,
        description="`POST /kudos/transfer` per hour for each key (the Horde allows 90).",
    )
    margin: Float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="Seconds of slack added to each window, which counts from the Horde's answer to a "
        "request (the Horde counts it on arrival, at the latest then).",
    )
    max_hold: Float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Longest the bot holds one kind of POST back after a 429, in seconds.",
    )
    processes: Int = Field(
        default=1,
        ge=1,
        le=64,
        description="Bot processes sharing this IP: each keeps 1/`processes` of the per-IP limits (image, "
        "text and alchemy submissions); per-key limits stay whole. See [Running at "
        "scale](#running-at-scale).",
    )

    def limits(self) -> dict[Kind, tuple[Limit, ...]]:
        # Per-IP limits are shared by every process on the IP: each keeps 1/processes of the rate (the same
        # count over a window that many times longer). Per-key limits stay whole.
        ip = float(self.processes)
        return {
            "image": (Limit(self.image_per_second, ip), Limit(self.image_per_second, 1.0, per_key=True)),
            "text": (Limit(self.text_per_second, ip), Limit(self.text_per_second, 1.0, per_key=True)),
            "alchemy": (Limit(self.alchemy_per_minute, 60.0 * ip),),
            "kudos": (
                Limit(self.kudos_per_second, 1.0, per_key=True),
                Limit(self.kudos_per_hour, 3600.0, per_key=True),
            ),
        }


def key_id(secret: str | None) -> str:
    """What the pacer knows of an API key: a short hash, never the key."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:16]


@dataclass
class _Lane:
    """One kind of work: its FIFO line, under each limit the times slots landed (sorted) and the grant
    times of slots still in flight, a hold after a 429."""

    limits: tuple[Limit, ...]
    line: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    sent: dict[tuple[int, str], deque[float]] = field(default_factory=dict)
    flying: dict[tuple[int, str], deque[float]] = field(default_factory=dict)
    held_until: float = 0.0


class Pacer:
    def __init__(
        self, clock: Clock, settings: PacerSettings | None = None, *, flight_timeout: float = 60.0
    ) -> None:
        self._clock = clock
        self.settings = settings or PacerSettings()
        # The longest a paced request can be on its way (the HTTP client's timeouts): a slot not landed
        # by then is counted as landed then.
        self._flight_timeout = flight_timeout
        self._lanes: dict[Kind, _Lane] = {
            kind: _Lane(limits) for kind, limits in self.settings.limits().items()
        }
        self.sends = 0  # every granted slot (figures for logs and benchmarks)
        self.holds = 0  # 429s that made the bot hold a kind back

    def waiting(self, kind: Kind) -> int:
        """How many callers stand in line for `kind` right now."""
        return self._lanes[kind].waiting

    def next_free(self, kind: Kind, key: str | None = None) -> float:
        """Seconds until a send of `kind` (with `key`) would be allowed, ignoring anyone in line."""
        return max(0.0, self._free_at(self._lanes[kind], key or "") - self._clock.monotonic())

    def try_acquire(self, kind: Kind, key: str | None = None) -> bool:
        """Take a slot now if one is free and nobody waits in `acquire` before the caller: for a caller
        that keeps its own line (the generation queue, sent from scheduler ticks). Counted when True."""
        lane = self._lanes[kind]
        if lane.waiting or self._free_at(lane, key or "") > self._clock.monotonic():
            return False
        self._count(lane, key or "")
        return True

    async def acquire(self, kind: Kind, key: str | None = None) -> None:
        """Wait for this caller's turn (first come, first served) and a free slot under every limit of
        `kind`; the send is counted on return. `key` is `key_id(apikey)`. Cancelling the wait leaves no
        trace: no slot is used."""
        lane = self._lanes[kind]
        lane.waiting += 1
        try:
            async with lane.line:
                while True:
                    delay = self._free_at(lane, key or "") - self._clock.monotonic()
                    if delay <= 0:
                        break
                    await self._clock.sleep(delay)
                self._count(lane, key or "")
        finally:
            lane.waiting -= 1

    def landed(self, kind: Kind, key: str | None = None) -> None:
        """The Horde's answer (or a failure) to a paced request of `kind` with `key` is in: its slot counts
        from now. Which of the key's slots in flight it was doesn't matter: they are counted alike."""
        lane = self._lanes[kind]
        now = self._clock.monotonic()
        for bucket in self._buckets(lane, key or ""):
            flying = lane.flying.get(bucket)
            if flying:
                flying.popleft()
                sent = lane.sent.setdefault(bucket, deque())
                sent.append(max(now, sent[-1]) if sent else now)

    def hold(self, kind: Kind, seconds: float) -> float:
        """After a 429 from the Horde's limiter: send nothing of `kind` for `seconds` (capped)."""
        lane = self._lanes[kind]
        seconds = min(max(seconds, 0.0), self.settings.max_hold)
        lane.held_until = max(lane.held_until, self._clock.monotonic() + seconds)
        self.holds += 1
        return seconds

    def hold_after_429(
        self, kind: Kind, retry_after: float | None, reset_epoch: float | None, wall_now: float
    ) -> float:
        """Hold `kind` back as a 429 asks: `Retry-After` if positive; for 0 or none, until
        `X-RateLimit-Reset` (epoch seconds), and at least to the next whole second. Returns the hold."""
        if retry_after is not None and retry_after > 0:
            return self.hold(kind, retry_after)
        to_next_second = math.floor(wall_now) + 1 - wall_now
        wait = to_next_second
        if reset_epoch is not None:
            # Never longer than the tightest window the kind counts (the clocks may disagree).
            longest = min(limit.per for limit in self._lanes[kind].limits) + self.settings.margin
            wait = max(wait, min(reset_epoch - wall_now, longest))
        return self.hold(kind, max(wait, 0.05))

    @staticmethod
    def _buckets(lane: _Lane, key: str) -> list[tuple[int, str]]:
        return [(index, key if limit.per_key else "") for index, limit in enumerate(lane.limits)]

    def _free_at(self, lane: _Lane, key: str) -> float:
        now = self._clock.monotonic()
        free = lane.held_until
        for (index, bucket_key), limit in zip(self._buckets(lane, key), lane.limits, strict=True):
            bucket = (index, bucket_key)
            flying = lane.flying.get(bucket)
            while flying and flying[0] + self._flight_timeout <= now:
                # Never landed (see the module's docstring): counted as landed at its timeout.
                self._land_late(lane, bucket, flying.popleft() + self._flight_timeout)
            sent = lane.sent.get(bucket)
            window = limit.per + self.settings.margin
            while sent and sent[0] <= now - window:
                sent.popleft()
            in_flight = len(flying) if flying else 0
            landed = len(sent) if sent else 0
            if landed + in_flight < limit.count:
                continue
            if in_flight >= limit.count:
                # The slot that frees next is still in flight: it lands no earlier than now.
                free = max(free, now + window)
            else:
                assert sent is not None
                free = max(free, sent[landed + in_flight - limit.count] + window)
        return free

    @staticmethod
    def _land_late(lane: _Lane, bucket: tuple[int, str], at: float) -> None:
        sent = lane.sent.setdefault(bucket, deque())
        index = len(sent)
        while index and sent[index - 1] > at:
            index -= 1
        sent.insert(index, at)

    def _count(self, lane: _Lane, key: str) -> None:
        now = self._clock.monotonic()
        for bucket in self._buckets(lane, key):
            lane.flying.setdefault(bucket, deque()).append(now)
        if len(lane.sent) + len(lane.flying) > 4096:
            # Keys that sent nothing for a whole window are forgotten.
            for buckets in (lane.sent, lane.flying):
                for bucket in [b for b, times in buckets.items() if not times]:
                    del buckets[bucket]
        self.sends += 1


__all__ = ["KINDS", "Kind", "Limit", "Pacer", "PacerSettings", "key_id"]
