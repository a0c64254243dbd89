"""The tasks discord.py runs the bot's event handlers in: so that closing can stop taking events and let the
handlers running finish before the services and the database close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)
Parser = Callable[[Any], Any]


class HandlerTasks:
    """discord.py starts a task for every listener of a gateway event, every application command and
    autocomplete, every button, select and modal submission (in `Client.dispatch`, `CommandTree` and the
    view store), and keeps none of them. Each is started while the bot parses the gateway event it answers:
    `watch` wraps the bot's parsers so that the tasks a parse starts are kept here until they end.

    On close the bot first `stop_taking` events (a parse then does nothing, as for an event that arrived
    after the connection closed), then `finish`es the handlers running, and only then closes its services:
    a handler cut off by the database closing failed mid-query, and one still running when the event loop
    ended was cancelled there (asyncpg's connection then logged a traceback closing)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()
        self.taking = True

    @property
    def running(self) -> int:
        return len(self._running)

    def watch(self, parsers: MutableMapping[str, Parser]) -> None:
        """Wrap each gateway event's parser (discord.py's `ConnectionState.parsers`, read by the gateway for
        every event) in place."""
        for event, parse in list(parsers.items()):
            parsers[event] = self._tracked(parse)

    def _tracked(self, parse: Parser) -> Parser:
        def tracked(data: Any) -> Any:
            if not self.taking:
                return None
            # A parse runs to its end without yielding: the tasks created meanwhile are its handlers. The
            # loop's task factory sees each (discord.py calls loop.create_task or asyncio.create_task).
            loop = asyncio.get_running_loop()
            previous = loop.get_task_factory()
            started: list[asyncio.Task[Any]] = []

            def factory(loop: asyncio.AbstractEventLoop, coro: Any, /, **options: Any) -> Any:
                made = (
                    previous(loop, coro, **options) if previous else asyncio.Task(coro, loop=loop, **options)
                )
                if isinstance(made, asyncio.Task):
                    started.append(made)
                return made

            loop.set_task_factory(factory)
            try:
                return parse(data)
            finally:
                loop.set_task_factory(previous)
                for task in started:
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)

        return tracked

    def stop_taking(self) -> None:
        """From now on gateway events are dropped, interactions included (the member sees Discord's "the
        application did not respond", as when the bot is offline)."""
        self.taking = False

    async def finish(self, grace: float) -> None:
        """Wait up to `grace` seconds for the handlers running to end; then cancel those left, and wait for
        them to unwind (a cancelled handler's transaction rolls back; what it had stored stays)."""
        current = asyncio.current_task()
        running = [task for task in self._running if task is not current]
        if not running:
            return
        _done, left = await asyncio.wait(running, timeout=grace) if grace > 0 else (set(), set(running))
        if left:
            # discord.py names the tasks after what they run ("discord.py: on_raw_reaction_add").
            log.warning(
                "%d event handler%s still running after %gs, stopped: %s",
                len(left),
                "" if len(left) == 1 else "s",
                grace,
                ", ".join(sorted({task.get_name() for task in left})),
            )
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
