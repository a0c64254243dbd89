"""The fake Horde in a process of its own, for benchmarks that measure the bot.

In the benchmark's own process the fake's request handling (JSON, base64 of the img2img sources, result
images) takes turns with the bot's event loop for the GIL, and its memory (request bodies, images) counts
in the bot's RSS: the figures would measure the fake as much as the bot. Here it serves from a child
process (multiprocessing, spawn) on 127.0.0.1, and the benchmark drives it through a pipe:

    clock = SharedClock(t=0.0, start=...)       # the bot's TestClock; the fake reads the same virtual time
    horde = HordeProcess(clock, attrs={"auto_expire": False})
    horde.start()                               # -> base_url
    horde.call("count", "POST", r"/generate/async")     # any FakeHorde method, run in the child
    horde.run(some_function, arg)               # some_function(fake, arg) in the child: one round trip for
                                                # many changes (a module-level function the child imports)
    horde.stop()

`SharedClock.t` lives in shared memory, so every move of the virtual clock (the benchmark's ticks and the
bot's own `clock.sleep`s) is seen by the fake at once, as when both read one `TestClock` in one process.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.clock import DEFAULT_START, TestClock  # noqa: E402

# spawn, not fork: the child starts clean (no copy of the benchmark's loop, threads or buffers).
_CONTEXT = multiprocessing.get_context("spawn")


class SharedClock(TestClock):
    """A `TestClock` whose monotonic time is a double in shared memory, readable by a child process."""

    def __init__(self, *, t: float = 1000.0, start: datetime = DEFAULT_START) -> None:
        self.shared = _CONTEXT.RawValue("d", t)
        super().__init__(t=t, start=start)

    @property  # type: ignore[override]
    def t(self) -> float:
        return float(self.shared.value)

    @t.setter
    def t(self, value: float) -> None:
        self.shared.value = value


class HordeProcess:
    """A `FakeHorde` serving from a child process; `call`/`run` act on it there (see the module doc)."""

    def __init__(self, clock: SharedClock | None = None, attrs: dict[str, Any] | None = None, **options: Any):
        self.clock = clock
        self.attrs = dict(attrs or {})
        self.options = options
        self.base_url = ""
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> str:
        parent, child = _CONTEXT.Pipe()
        shared = self.clock.shared if self.clock is not None else None
        self._process = _CONTEXT.Process(
            target=_serve, args=(child, shared, self.options, self.attrs), name="fake-horde", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        self.base_url = str(self._receive())
        return self.base_url

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """`fake.<name>(*args, **kwargs)` in the child; its result comes back pickled."""
        return self._ask(("call", name, args, kwargs))

    def run(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """`fn(fake, *args)` in the child (fn is pickled by name: a module-level function)."""
        return self._ask(("run", fn, args, {}))

    def stop(self) -> list[str]:
        """Stop the fake and its process; returns the fake's own errors (`server_errors`: should be none)."""
        if self._conn is None or self._process is None:
            return []
        try:
            return list(self._ask(("stop", None, (), {})))
        finally:
            self._conn.close()
            self._process.join(timeout=10)
            if self._process.is_alive():  # pragma: no cover - a stuck child must not outlive the run
                self._process.kill()
            self._conn = None
            self._process = None

    def _ask(self, message: tuple[str, Any, tuple[Any, ...], dict[str, Any]]) -> Any:
        if self._conn is None:
            raise RuntimeError("HordeProcess is not started")
        self._conn.send(message)
        return self._receive()

    def _receive(self) -> Any:
        assert self._conn is not None
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"fake Horde process: {value}")
        return value


def _serve(conn: Connection, shared: Any, options: dict[str, Any], attrs: dict[str, Any]) -> None:
    """The child: a FakeHorde (serving from its own thread) and a loop answering the parent's pipe."""
    from tests.fakes.horde import FakeHorde

    if shared is not None:
        options = {**options, "clock": lambda: float(shared.value)}
    fake = FakeHorde(**options)
    for name, value in attrs.items():
        setattr(fake, name, value)
    conn.send((True, fake.start()))
    while True:
        kind, target, args, kwargs = conn.recv()
        if kind == "stop":
            fake.stop()
            conn.send((True, list(fake.server_errors)))
            return
        try:
            result = getattr(fake, target)(*args, **kwargs) if kind == "call" else target(fake, *args)
        except Exception:
            conn.send((False, traceback.format_exc()))
        else:
            conn.send((True, result))
