"""Node events: one JSON object per line on stdout with --json, and in-process listeners.

Writing never blocks the event loop: a line goes straight to the file descriptor only when
it is certain not to block (nothing queued, the fd polls writable, the line fits PIPE_BUF,
so the pipe takes it whole); otherwise it is queued for a writer thread. The queue is
bounded: when full, the oldest non-essential event ("sent", "message") is dropped and
counted, and an "output-dropped" event with the count is written once the queue drains.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from p2pmed.node.events import MessageDelivered, MessageSent, NodeEvent, OutputDropped

log = logging.getLogger("p2pmed.node")

Listener = Callable[[dict[str, Any]], None]

# high-rate, droppable under backpressure
NON_ESSENTIAL = frozenset({MessageSent.NAME, MessageDelivered.NAME})
MAX_QUEUED = 10_000  # lines waiting for a slow reader
HARD_MAX_QUEUED = 100_000  # essential lines too are dropped (counted) beyond this
EXIT_STALL_S = 10.0  # at exit, give up flushing after this long without progress


class _Line:
    __slots__ = ("alive", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.alive = True


class _Writer:
    """Bounded, drop-counting, non-blocking line output to one file descriptor."""

    def __init__(self, fd: int, max_queued: int = MAX_QUEUED) -> None:
        self.fd = fd
        self.max_queued = max_queued
        self.dropped = 0  # total since start
        self._unreported = 0
        self._queue: collections.deque[_Line] = collections.deque()
        self._droppable: collections.deque[_Line] = collections.deque()
        self._alive = 0
        self._busy = False  # the thread is writing a line outside the lock
        self._broken = False
        self._closing = False
        self._written = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def write(self, data: bytes, essential: bool) -> None:
        with self._cond:
            if self._broken:
                return
            if not self._queue and not self._busy:
                data = self._write_now(data)
                if not data:
                    return
                essential = True  # the rest of a partly written line must follow
            if self._alive >= self.max_queued:
                if not essential and not self._droppable:
                    self._drop_count()
                    return
                self._drop_oldest(essential)
            line = _Line(data)
            self._queue.append(line)
            self._alive += 1
            if not essential:
                self._droppable.append(line)
                if len(self._droppable) > 2 * self.max_queued:  # forget written lines
                    alive = [x for x in self._droppable if x.alive]
                    self._droppable = collections.deque(alive)
            self._start()
            self._cond.notify()

    def _write_now(self, data: bytes) -> bytes:
        """Write what certainly does not block; return what is left."""
        if len(data) > select.PIPE_BUF:
            return data
        try:
            _, ready, _ = select.select([], [self.fd], [], 0)
            if not ready:
                return data
            n = os.write(self.fd, data)
        except BlockingIOError:  # fd set non-blocking elsewhere (a shared tty): queue it
            return data
        except (OSError, ValueError):
            self._broken = True
            return b""
        self._written += 1
        return data[n:]

    def _drop_oldest(self, essential: bool) -> None:
        while self._droppable:
            line = self._droppable.popleft()
            if line.alive:
                line.alive = False
                self._alive -= 1
                self._drop_count()
                return
        if self._alive >= HARD_MAX_QUEUED:  # only essential lines left: the reader is gone
            for line in self._queue:
                if line.alive:
                    line.alive = False
                    self._alive -= 1
                    self._drop_count()
                    return

    def _drop_count(self) -> None:
        self.dropped += 1
        self._unreported += 1

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="p2pmed-events", daemon=True)
            self._thread.start()

    def _next(self) -> bytes | None:
        """The next line to write (None: stop); called with the lock held."""
        while True:
            while self._queue:
                line = self._queue.popleft()
                if line.alive:
                    line.alive = False  # taken: no longer droppable
                    self._alive -= 1
                    return line.data
            self._droppable.clear()  # every line in it was written or dropped
            if self._unreported:
                dropped = OutputDropped(self._unreported)
                report = {"event": dropped.NAME, "ts": round(time.time(), 6), **dropped.record()}
                self._unreported = 0
                return (json.dumps(report, separators=(",", ":")) + "\n").encode()
            self._cond.notify_all()  # drained: wake flush()
            if self._closing:
                return None
            self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                data = self._next()
                if data is None:
                    return
                self._busy = True
            try:
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(self.fd, view) :]
                    except BlockingIOError:
                        select.select([], [self.fd], [], 1.0)
            except (OSError, ValueError):
                with self._cond:
                    self._broken = True
                    self._busy = False
                    self._queue.clear()
                    self._droppable.clear()
                    self._alive = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._written += 1

    def flush(self, stall_s: float = EXIT_STALL_S) -> bool:
        """Wait until every queued line is written; give up after `stall_s` without progress.
        Blocks: for exit paths and tests, not for the event loop."""
        with self._cond:
            last = self._written
            while (self._queue or self._busy or self._unreported) and not self._broken:
                if self._thread is None:
                    self._start()
                if not self._cond.wait(stall_s) and self._written == last:
                    return False
                last = self._written
            return True

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()


class Events:
    def __init__(self, *, json_out: bool, stream: TextIO | None = None) -> None:
        self.json_out = json_out
        self.stream = stream or sys.stdout
        self.listeners: list[Listener] = []
        self._writer: _Writer | None = None
        if json_out:
            try:
                fd = self.stream.fileno()
            except (AttributeError, OSError, ValueError):  # in-memory stream: cannot block
                fd = -1
            if fd >= 0:
                self.stream.flush()  # anything printed before goes out first
                self._writer = _Writer(fd)
                atexit.register(self._writer.close)

    @property
    def dropped(self) -> int:
        """Output lines dropped because the reader of stdout was too slow."""
        return self._writer.dropped if self._writer is not None else 0

    def flush(self) -> bool:
        """Block until queued output is written (False: the reader made no progress)."""
        return self._writer.flush() if self._writer is not None else True

    def publish(self, event: NodeEvent) -> None:
        """A typed event, printed and passed on as the named event it stands for."""
        self.emit(event.NAME, **event.record())

    def emit(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, "ts": round(time.time(), 6), **fields}
        if self.json_out:
            line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
            if self._writer is not None:
                self._writer.write(line.encode(), event not in NON_ESSENTIAL)
            else:
                self.stream.write(line)
                self.stream.flush()
        for listener in list(self.listeners):
            listener(record)
        if event in ("technical-alarm", "fingerprint-mismatch", "store-failed") or (
            event == "error" and fields.get("code") != "join"  # `p2pmed node` prints that one
        ):
            log.warning("%s", record)
        else:
            log.debug("%s", record)
