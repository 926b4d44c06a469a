"""Background tasks of one owner: kept referenced while they run, cancelled together, and
a task that fails is logged (and reported) instead of being dropped silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("p2pmed.node")


class TaskSet:
    def __init__(self, name: str, on_error: Callable[[BaseException], None] | None = None):
        self.name = name
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: task failed", self.name, exc_info=exc)
            if self._on_error is not None:
                self._on_error(exc)

    def __iter__(self) -> Any:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
