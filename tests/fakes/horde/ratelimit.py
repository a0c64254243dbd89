"""A flask-limiter look-alike on an injectable clock (API_NOTES §3).

Two counting strategies:
- ``horde`` (the default: what AI Horde 5.1.5 does, transcripts 99-115): fixed windows, each starting
  at the first hit after the previous one expired and lasting ``per`` seconds. Every answer on a
  limited route carries ``X-RateLimit-Limit/-Remaining/-Reset`` (Reset = the window's end in epoch
  seconds, rounded up) and ``Retry-After`` = whole seconds until Reset, so **0 when the window resets
  within the current second** and 1 otherwise for the per-second limits: immediate retries after a
  ``Retry-After: 0`` are refused.
- ``moving`` (only on request, ``FakeHorde(horde_limiter=False)``; the fake's default before the real
  server was measured): a hit is refused while ``limit`` hits lie within the last ``per`` seconds;
  ``Retry-After`` is at least 1. A test choosing it says why.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Scope = Literal["ip_path", "ip_route", "key_path"]

_UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class RateRule:
    """``limit`` hits per ``per`` seconds, counted per ``scope``.

    scope: ``ip_path`` = remote IP + method + concrete path (so ``/status/{id}`` has one bucket per id);
    ``ip_route`` = remote IP + route (app-wide default limits); ``key_path`` = sha256(apikey) + method + path.
    ``whitelisted`` replaces ``limit`` for whitelisted IPs, ``anon`` for the anonymous key (``key_path``).
    """

    limit: int
    per: int
    scope: Scope = "ip_path"
    whitelisted: int | None = None
    anon: int | None = None

    def text(self, limit: int) -> str:
        return f"{limit} per 1 {_UNITS.get(self.per, f'{self.per} seconds')}"


DEFAULT_RULES: tuple[RateRule, ...] = (RateRule(90, 60, "ip_route", whitelisted=None),)


@dataclass
class RateDecision:
    allowed: bool
    headers: dict[str, str]
    message: str | None = None


Strategy = Literal["moving", "horde"]


class RateLimiter:
    """Window counters. Not thread-safe on its own: the fake calls it under its lock."""

    def __init__(
        self, now: Callable[[], float], wall: Callable[[], float], *, strategy: Strategy = "horde"
    ) -> None:
        self._now = now
        self._wall = wall
        self.strategy: Strategy = strategy
        self._hits: dict[str, deque[float]] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # horde strategy: key -> (window start, hits)

    def reset(self) -> None:
        self._hits.clear()
        self._windows.clear()

    def check(
        self,
        rules: tuple[RateRule, ...],
        *,
        ip: str,
        method: str,
        path: str,
        route: str,
        apikey: str | None,
        anon: bool,
        whitelisted: bool,
    ) -> RateDecision:
        """Count one hit against every rule; refuse (recording nothing) if any rule is exhausted."""
        now = self._now()
        if self.strategy == "horde":
            keys = [
                (
                    self._key(index, rule, ip, method, path, route, apikey),
                    rule,
                    self._limit(rule, anon, whitelisted),
                )
                for index, rule in enumerate(rules)
            ]
            return self._check_fixed(now, keys)
        evaluated: list[tuple[str, int, RateRule, deque[float]]] = []
        for index, rule in enumerate(rules):
            limit = self._limit(rule, anon, whitelisted)
            if rule.scope == "key_path":
                digest = hashlib.sha256((apikey or "").encode()).hexdigest()
                key = f"{index}|{digest}@{method}@{path}"
            elif rule.scope == "ip_route":
                key = f"{index}|{ip}@{route}"
            else:
                key = f"{index}|{ip}@{method}@{path}"
            window = self._hits.setdefault(key, deque())
            while window and window[0] <= now - rule.per:
                window.popleft()
            evaluated.append((key, limit, rule, window))
        for _key, limit, rule, window in evaluated:
            if len(window) >= limit:
                reset_in = max(window[0] + rule.per - now, 0.0)
                return RateDecision(False, self._headers(limit, 0, reset_in, retry=True), rule.text(limit))
        for _key, _limit, _rule, window in evaluated:
            window.append(now)
        tightest: tuple[int, int, float, int] | None = None
        for _key, limit, rule, window in evaluated:
            remaining = limit - len(window)
            reset_in = window[0] + rule.per - now if window else float(rule.per)
            if tightest is None or (remaining, rule.per) < tightest[:2]:
                tightest = (remaining, rule.per, reset_in, limit)
        if tightest is None:
            return RateDecision(True, {})
        remaining, _per, reset_in, limit = tightest
        return RateDecision(True, self._headers(limit, remaining, reset_in, retry=False))

    @staticmethod
    def _limit(rule: RateRule, anon: bool, whitelisted: bool) -> int:
        limit = rule.limit
        if whitelisted and rule.whitelisted is not None:
            limit = rule.whitelisted
        if rule.scope == "key_path":
            if anon and rule.anon is not None:
                limit = rule.anon
            elif whitelisted and rule.anon is not None:
                limit = max(limit, rule.anon)
        return limit

    @staticmethod
    def _key(
        index: int, rule: RateRule, ip: str, method: str, path: str, route: str, apikey: str | None
    ) -> str:
        if rule.scope == "key_path":
            digest = hashlib.sha256((apikey or "").encode()).hexdigest()
            return f"{index}|{digest}@{method}@{path}"
        if rule.scope == "ip_route":
            return f"{index}|{ip}@{route}"
        return f"{index}|{ip}@{method}@{path}"

    def _check_fixed(self, now: float, keys: list[tuple[str, RateRule, int]]) -> RateDecision:
        """The Horde's fixed windows (flask-limiter ``fixed-window`` on Redis keys that expire)."""
        current: list[tuple[str, RateRule, int, float, int]] = []
        for key, rule, limit in keys:
            start, hits = self._windows.get(key, (now, 0))
            if now >= start + rule.per:
                start, hits = now, 0
            current.append((key, rule, limit, start, hits))
        for _key, rule, limit, start, hits in current:
            if hits >= limit:
                return RateDecision(
                    False, self._fixed_headers(now, limit, 0, start + rule.per), rule.text(limit)
                )
        tightest: tuple[int, int, float, int] | None = None
        for key, rule, limit, start, hits in current:
            if hits == 0:
                start = now
            self._windows[key] = (start, hits + 1)
            remaining = limit - hits - 1
            if tightest is None or (remaining, rule.per) < tightest[:2]:
                tightest = (remaining, rule.per, start + rule.per, limit)
        if tightest is None:
            return RateDecision(True, {})
        remaining, _per, ends, limit = tightest
        return RateDecision(True, self._fixed_headers(now, limit, remaining, ends))

    def _fixed_headers(self, now: float, limit: int, remaining: int, ends: float) -> dict[str, str]:
        wall = self._wall()
        reset = math.ceil(wall + (ends - now))
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(remaining, 0)),
            "X-RateLimit-Reset": str(reset),
            # Whole seconds until Reset, rounded down: 0 when the window ends within this second.
            "Retry-After": str(max(0, int(reset - wall))),
        }

    def _headers(self, limit: int, remaining: int, reset_in: float, *, retry: bool) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self._wall() + reset_in)),
        }
        # Every answer on a limited route carries Retry-After, as the real server's do (transcripts 02-115).
        headers["Retry-After"] = str(max(1, math.ceil(reset_in)) if retry else max(0, int(reset_in)))
        return headers
