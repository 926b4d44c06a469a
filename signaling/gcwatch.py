"""The interpreter's garbage collector in a server holding thousands of connections.

A collection stops the whole process: every join, message and relay frame waits for it.
An endpoint costs about 90 tracked objects here, so 5,000 endpoints are ~500,000, and a
full (generation 2) collection walks all of them: ~100 ms on this machine. CPython runs
one whenever the long-lived heap has grown by a quarter, that is during exactly the load
peaks (a join storm, a dead server's endpoints rejoining), and the joins of that moment
waited for it (join p99 142-287 ms through HAProxy with idle endpoints held).

`Freezer` (the `signaling` command runs it): every FREEZE_EVERY seconds, a young
collection and then gc.freeze(), which moves what survived into the permanent generation
(a list splice, no walk), so later collections walk only what is younger. A closed
connection leaves ~30 objects in reference cycles; those frozen wait for the full
collection FULL_EVERY seconds (unfreeze, collect, freeze): one pause on a schedule
instead of one per growth spurt. `watch` times every collection into
p2pmed_gc_pause_seconds.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from signaling.metrics import Metrics

Callback = Callable[[str, dict[str, Any]], None]


def watch(metrics: Metrics) -> Callback:
    """Start timing collections; pass the result to `unwatch` to stop."""
    started: list[float] = [0.0]
    hist = [metrics.gc_pause.labels(str(g)) for g in range(3)]

    def cb(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            hist[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(cb)
    return cb


def unwatch(cb: Callback) -> None:
    if cb in gc.callbacks:
        gc.callbacks.remove(cb)


FREEZE_EVERY = 5.0
FULL_EVERY = 600.0


class Freezer:
    def __init__(self, every: float = FREEZE_EVERY, full_every: float = FULL_EVERY) -> None:
        self.every = every
        self.full_every = full_every
        self.fulls = 0

    def step(self, full: bool) -> None:
        if full:
            gc.unfreeze()
            gc.collect()
            self.fulls += 1
        else:
            gc.collect(1)
        gc.freeze()

    async def run(self) -> None:
        last_full = time.monotonic()
        self.step(False)
        try:
            while True:
                await asyncio.sleep(self.every)
                full = time.monotonic() - last_full >= self.full_every
                if full:
                    last_full = time.monotonic()
                self.step(full)
        finally:
            gc.unfreeze()
