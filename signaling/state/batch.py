"""Redis commands of one event-loop turn sent as one pipeline (group commit for round trips).

redis-py spends about 150-200 us of CPU on each command it sends alone (connection pool,
timeouts, packing, parsing), more than the join it serves; in a pipeline of ten, about
50 us each. In a join storm many joins wait on the store in the same loop turn: their
commands go together, in the order they were queued, one pipeline at a time. Each command
stays what it was (a Lua script is atomic by itself); only the round trip is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

Command = tuple[Any, ...]


class Batcher:
    """Queue commands; the next loop turn sends everything queued as one pipeline, after the
    previous pipeline has answered. `scripts` (sha -> source) are loaded again when Redis
    lost them (it restarted) and the commands that missed them are sent once more."""

    def __init__(
        self,
        r: aioredis.Redis,
        scripts: dict[str, Any],
        failed: Callable[[BaseException], Exception],
    ) -> None:
        self.r = r
        self.scripts = scripts
        self.failed = failed  # the exception a caller gets when Redis failed
        self.round_trips = 0  # pipelines sent (tests, metrics)
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def call(self, *command: Any) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((command, fut))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return fut

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, fut in self._queue:
            fut.cancel()
        self._queue.clear()

    async def _run(self) -> None:
        # started by the first command of a loop turn, this runs on the next turn: every
        # command queued meanwhile, and while the previous pipeline was out, goes together
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        live = [(c, f) for c, f in batch if not f.done()]  # a waiter cancelled: not sent
        try:
            results = await self._pipeline([c for c, _ in live])
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted empty: load the scripts and send those again
                for source in self.scripts.values():
                    await self.r.script_load(source)
                again = await self._pipeline([live[i][0] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    results[i] = r
        except (RedisError, OSError) as e:
            for _, f in live:
                if not f.done():
                    f.set_exception(self.failed(e))
            return
        except Exception as e:  # a bug: its callers see it, the next batch goes on
            for _, f in live:
                if not f.done():
                    f.set_exception(e)
            return
        except BaseException:
            for _, f in live:
                f.cancel()
            raise
        for (_, f), r in zip(live, results, strict=True):
            if f.done():
                continue
            if isinstance(r, RedisError):
                f.set_exception(self.failed(r))
            elif isinstance(r, BaseException):
                f.set_exception(r)
            else:
                f.set_result(r)

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        self.round_trips += 1
        async with self.r.pipeline(transaction=False) as pipe:
            for c in commands:
                pipe.execute_command(*c)
            return list(await pipe.execute(raise_on_error=False))
