"""Group commit: work submitted while one batch runs goes together in the next (writes, and reads of many
rows: a storm is a handful of statements behind SQLite's one writer, not one each)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items submitted while a write is running are written together by the next one: a storm of
    gifts is a handful of transactions. The first caller writes; the others wait for their own result
    (not for a lock, which would wake them one loop turn each)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writing = False

    async def submit(self, item: T, write: Callable[[list[T]], Awaitable[list[R]]]) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._writing:
            self._writing = True
            try:
                while self._waiting:
                    batch, self._waiting = self._waiting, []
                    try:
                        results = await write([i for i, _f in batch])
                    except Exception as exc:
                        for _i, f in batch:
                            if not f.done():
                                f.set_exception(exc)
                                f.exception()  # retrieved here; each waiter raises it itself
                    except BaseException:
                        for _i, f in batch:
                            f.cancel()
                        raise
                    else:
                        for (_i, f), result in zip(batch, results, strict=True):
                            if not f.done():
                                f.set_result(result)
            finally:
                self._writing = False
                # Cancelled while others were waiting: nobody is left writing for them, so they fail now
                # (their callers see the error) rather than wait forever.
                for _i, f in self._waiting:
                    if not f.done():
                        f.set_exception(RuntimeError("group commit interrupted; try again"))
                        f.exception()
                self._waiting = []
        return await future
