"""Redis commands of one event-loop turn sent together (group commit for round trips).

redis-py spends about 200 us of CPU on each command it sends alone through its client
(connection pool, pipeline object, timeouts, packing, parsing), more than the rest of the
join it serves. Here the commands go over one connection of the batcher's own, packed by
hiredis in C (the same bytes as redis-py's packer, which spends ~15 us per 12-argument
script call on checking and encoding each argument in Python) and read with the
connection's own calls (about 90 us for one command, 40 us each in tens).
In a join storm many joins wait on the store in the same loop turn: their commands go
together, in the order they were queued, one batch at a time. Each command stays what it
was (a Lua script is atomic by itself); only the round trip is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

Command = tuple[Any, ...]


class Batcher:
    """Queue commands; the next loop turn sends everything queued as one batch, after the
    previous batch has answered. `scripts` (sha -> source) are loaded again when Redis
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
        self.round_trips = 0  # batches sent (tests, metrics)
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        # with the client's settings (address, password, TLS, timeouts); connects when used
        self._conn = r.connection_pool.make_connection()  # type: ignore[no-untyped-call]

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
        with contextlib.suppress(Exception):
            await self._conn.disconnect()

    async def _run(self) -> None:
        # started by the first command of a loop turn, this runs on the next turn: every
        # command queued meanwhile, and while the previous batch was out, goes together
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        live: list[tuple[Command, asyncio.Future[Any]]] = []
        packed: list[bytes] = []
        for c, f in batch:
            if f.done():  # a waiter cancelled: not sent
                continue
            try:
                packed.append(hiredis.pack_command(c))
            except TypeError as e:  # an argument not str, bytes, int or float: a bug, its own
                f.set_exception(e)
                continue
            live.append((c, f))
        if not live:
            return
        try:
            results = await self._round_trip(packed)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted empty: load the scripts and send those again
                for source in self.scripts.values():
                    await self.r.script_load(source)
                again = await self._round_trip([packed[i] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    results[i] = r
        except (RedisError, OSError) as e:
            await self._reset()
            for _, f in live:
                if not f.done():
                    f.set_exception(self.failed(e))
            return
        except Exception as e:  # a bug: its callers see it, the next batch goes on
            await self._reset()
            for _, f in live:
                if not f.done():
                    f.set_exception(e)
            return
        except BaseException:
            await self._reset()
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

    async def _round_trip(self, packed: Sequence[bytes]) -> list[Any]:
        """Send the packed commands, then read one reply each (an error reply is the
        exception)."""
        self.round_trips += 1
        conn = self._conn
        await conn.send_packed_command(b"".join(packed))
        out: list[Any] = []
        for _ in packed:
            try:
                out.append(await conn.read_response())
            except ResponseError as e:
                out.append(e)
        return out

    async def _reset(self) -> None:
        """After a failure or a cancellation the connection may hold replies not read:
        drop it (the next batch connects again)."""
        with contextlib.suppress(Exception):
            await self._conn.disconnect(nowait=True)
