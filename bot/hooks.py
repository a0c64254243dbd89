"""The one way a service reaches code that is built after it: `Hook` and `Port`.

A service gets everything that exists before it as a constructor argument. What exists only later (a cog, a
Discord client) or what would make two services import each other, registers itself on the service:

- `Hook`: the service tells (or asks) whoever listens, e.g. `accounts.linked` ("a member linked a key").
  Any number of listeners; each is awaited in turn, and one that raises is logged and skipped, so a failing
  follow-up never undoes or hides the service's own work.
- `Port`: the service needs the one implementation of something it can't do itself, e.g. `kudos.gateway`
  (display names and DMs through Discord). It answers with its `fallback` while nothing is plugged in.

Who registers also removes: a cog subscribes/plugs in `cog_load` and unsubscribes/unplugs in `cog_unload`
(`tests/test_wiring.py` loads and unloads every cog and checks that nothing is left behind); the factory
(`bot/app.py`) subscribes services to each other once, for the bot's life.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Hook(Generic[P, R]):
    """Listeners of one thing a service tells. `Hook[[int, HordeUser], None]`: listeners take (int, HordeUser)
    and return nothing worth reading; `Hook[[int], int | None]` for a question (`first`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[P, Awaitable[R]]] = []

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._listeners)} listeners>"

    @property
    def listeners(self) -> tuple[Callable[P, Awaitable[R]], ...]:
        return tuple(self._listeners)

    def subscribe(self, listener: Callable[P, Awaitable[R]]) -> None:
        """Listen from now on (in `cog_load`, or in the factory). Subscribing twice is a wiring mistake."""
        if listener in self._listeners:
            raise ValueError(f"{listener!r} already listens to {self.name}")
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[P, Awaitable[R]]) -> None:
        """Stop listening (in `cog_unload`); nothing happens if it wasn't listening."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell every listener, in the order they subscribed (those subscribed when the call began)."""
        for listener in self.listeners:
            try:
                await listener(*args, **kwargs)
            except Exception:
                log.exception("a listener of %s failed: %r", self.name, listener)

    async def first(self, *args: P.args, **kwargs: P.kwargs) -> R | None:
        """Ask the listeners in turn; the first answer that isn't None wins (None if none answers)."""
        for listener in self.listeners:
            try:
                answer = await listener(*args, **kwargs)
            except Exception:
                log.exception("a listener of %s failed: %r", self.name, listener)
                continue
            if answer is not None:
                return answer
        return None


class Port(Generic[T]):
    """The one implementation of `T` a service uses, plugged in by the cog that owns it."""

    def __init__(self, name: str, fallback: T) -> None:
        self.name = name
        self._fallback = fallback
        self._plugged: T | None = None

    def __repr__(self) -> str:
        return f"<Port {self.name}: {'plugged' if self._plugged is not None else 'fallback'}>"

    @property
    def plugged(self) -> T | None:
        """What is plugged in (None: the fallback answers)."""
        return self._plugged

    def get(self) -> T:
        return self._plugged if self._plugged is not None else self._fallback

    def plug(self, implementation: T) -> None:
        """Plug in (in `cog_load`). Another implementation already plugged in is a wiring mistake."""
        # Compared by equality: a cog plugs in its bound methods, a new object at each attribute access.
        if self._plugged is not None and self._plugged != implementation:
            raise ValueError(f"{self.name} already has {self._plugged!r} plugged in")
        self._plugged = implementation

    def unplug(self, implementation: T) -> None:
        """Unplug (in `cog_unload`); nothing happens if another one (or none) is plugged in."""
        if self._plugged is not None and self._plugged == implementation:
            self._plugged = None
