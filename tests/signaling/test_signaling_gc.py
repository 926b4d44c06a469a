"""The server's garbage-collector policy (signaling/gcwatch.py), in a process of its own
(gc.freeze is process-wide): what survived is frozen out of later collections, the cycles
it leaves are found by the scheduled full collection, and every collection is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, gc, weakref
from signaling.gcwatch import Freezer, unwatch, watch
from signaling.metrics import Metrics

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.b, b.a = b, a
    return a

m = Metrics()
cb = watch(m)
keep = [cycle() for _ in range(1000)]
ref = weakref.ref(keep[0])
f = Freezer()
f.step(False)
assert gc.get_freeze_count() >= 2000, gc.get_freeze_count()
keep.clear()  # 1000 cycles are garbage now, but frozen: a collection does not walk them
gc.collect()
assert ref() is not None
f.step(True)  # the scheduled full collection: unfreeze, collect, freeze
assert ref() is None and f.fulls == 1
for g in ("0", "1", "2"):
    n = m.registry.get_sample_value("p2pmed_gc_pause_seconds_count", {"generation": g})
    assert n and n >= 1, (g, n)
unwatch(cb)
assert cb not in gc.callbacks

async def main():
    t = asyncio.ensure_future(Freezer(every=0.01, full_every=0.02).run())
    while gc.get_freeze_count() == 0:
        await asyncio.sleep(0.01)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass
    assert gc.get_freeze_count() == 0  # stopped: nothing left frozen

gc.unfreeze()
asyncio.run(main())
print("ok")
"""


def test_freezer_and_pause_metric() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
