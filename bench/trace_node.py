"""Run `p2pmed ...` with per-message timing probes (an experiment harness, not the product).

    P2PMED_TRACE_OUT=trace.json python bench/trace_node.py node --join URL --json ...

Patches, in this process only, the points a DATA frame passes on its way out and writes, at
exit, one JSON document to P2PMED_TRACE_OUT:

    handoff  frame handed to aiortc (RTCDataChannel.send): [t, type, cls, seq, len]
    wire     first/again SCTP DATA chunk of a frame sent to DTLS: [t, cls, seq, tsn, count]
    sack     SACK from the peer: [t, cumulative_tsn, gaps, flight_before, cwnd]
    t3       T3 (retransmission timer) expiries: [t, rto]
    persist  Node.persist() calls that took >= 2 ms: [t_start, ms]
    gc       collections that took >= 2 ms: [t_start, ms, generation]
    flush    SessionDriver._flush_once calls that took >= 5 ms: [t_start, ms, peer, has_direct]
    commit   SessionStore.apply calls that wrote (one SQLite transaction, fsync): [t, ms, peer]
    stall    samples of the loop thread's stack while the loop is stalled >= 50 ms:
             [t, stalled_ms, innermost frames first]
    lag      event loop wake-ups late by >= 5 ms (a 5 ms ticker): [t_due, ms]

Times are time.time() seconds, the clock the frame header's timestamp_us comes from.
P2PMED_TRACE_PATCH=name,... applies experimental aiortc changes (see EXPERIMENTS).
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_HDR = struct.Struct(">BBBBIQQQQI")
TRACE: dict[str, list[Any]] = {
    k: []
    for k in (
        "handoff",
        "wire",
        "sack",
        "t3",
        "persist",
        "flush",
        "commit",
        "gc",
        "lag",
        "stall",
        "info",
    )
}


def _head(data: bytes) -> tuple[int, int, int] | None:
    if len(data) < _HDR.size:
        return None
    _v, ftype, _f, cls, _e, _pn, seq, _a, _ts, _len = _HDR.unpack_from(data)
    return ftype, cls, seq


def install() -> None:
    from aiortc import rtcsctptransport as sctp
    from aiortc.rtcdatachannel import RTCDataChannel

    import p2pmed.node.node as node_mod
    import p2pmed.node_cli as node_cli

    for name in filter(None, os.environ.get("P2PMED_TRACE_PATCH", "").split(",")):
        EXPERIMENTS[name](sctp)  # first, so the probes below wrap the patched code
        TRACE["info"].append(f"patch {name}")

    orig_send = RTCDataChannel.send

    def send(self: RTCDataChannel, data: Any) -> None:
        if isinstance(data, bytes) and (h := _head(data)) is not None:
            TRACE["handoff"].append([time.time(), h[0], h[1], h[2], len(data)])
        orig_send(self, data)

    RTCDataChannel.send = send  # type: ignore[method-assign]

    T = sctp.RTCSctpTransport
    orig_chunk = T._send_chunk

    async def send_chunk(self: Any, chunk: Any) -> None:
        if isinstance(chunk, sctp.DataChunk) and chunk.flags & sctp.SCTP_DATA_FIRST_FRAG:
            h = _head(chunk.user_data)
            if h is not None and h[0] == 1:
                TRACE["wire"].append([time.time(), h[1], h[2], chunk.tsn, chunk._sent_count])
        await orig_chunk(self, chunk)

    T._send_chunk = send_chunk  # type: ignore[method-assign]

    orig_sack = T._receive_sack_chunk

    async def receive_sack(self: Any, chunk: Any) -> None:
        TRACE["sack"].append(
            [time.time(), chunk.cumulative_tsn, len(chunk.gaps), self._flight_size, self._cwnd]
        )
        await orig_sack(self, chunk)

    T._receive_sack_chunk = receive_sack  # type: ignore[method-assign]

    orig_t3 = T._t3_expired

    def t3_expired(self: Any) -> None:
        TRACE["t3"].append([time.time(), self._rto])
        orig_t3(self)

    T._t3_expired = t3_expired  # type: ignore[method-assign]

    import p2pmed.node.driver as driver_mod

    orig_flush = driver_mod.SessionDriver._flush_once

    def flush_once(self: Any) -> None:
        t0 = time.time()
        orig_flush(self)
        ms = (time.time() - t0) * 1000
        if ms >= 5:
            direct = self.handler.direct is not None
            TRACE["flush"].append([t0, round(ms, 2), self.peer_id[:8], direct])

    driver_mod.SessionDriver._flush_once = flush_once  # type: ignore[method-assign]

    from p2pmed.store import sqlite as store_mod

    orig_apply = store_mod.SessionStore.apply

    def apply(self: Any, changes: Any, meta: Any = None) -> None:
        t0 = time.time()
        orig_apply(self, changes, meta)
        ms = (time.time() - t0) * 1000
        if ms >= 0.05:  # an empty apply returns at once; anything slower committed
            TRACE["commit"].append([t0, round(ms, 3), self.key.rsplit("/", 1)[-1][:8]])

    store_mod.SessionStore.apply = apply  # type: ignore[method-assign]

    orig_persist = node_mod.Node.persist

    def persist(self: Any) -> None:
        t0 = time.time()
        orig_persist(self)
        ms = (time.time() - t0) * 1000
        if ms >= 2:
            TRACE["persist"].append([t0, round(ms, 2)])

    node_mod.Node.persist = persist  # type: ignore[method-assign]

    gc_start: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.time()
        else:
            ms = (time.time() - gc_start[0]) * 1000
            if ms >= 2:
                TRACE["gc"].append([gc_start[0], round(ms, 2), info.get("generation")])

    gc.callbacks.append(on_gc)

    orig_run = node_cli._run

    def run(coro: Any) -> int:
        async def with_ticker() -> Any:
            task = asyncio.create_task(_ticker())
            try:
                return await coro
            finally:
                task.cancel()

        return orig_run(with_ticker())

    node_cli._run = run


_last_tick = [time.time()]


def _watchdog(main_id: int) -> None:
    """While the event loop has not ticked for >= 50 ms, sample what the loop thread is doing
    every 20 ms: [t, stalled_ms, innermost frames]. sqlite3 and socket calls release the GIL,
    Python code yields it every 5 ms, so this thread gets to look."""
    while True:
        time.sleep(0.02)
        stalled = time.time() - _last_tick[0]
        if stalled < 0.05:
            continue
        frame = sys._current_frames().get(main_id)
        if frame is None:
            continue
        stack = traceback.extract_stack(frame)[-6:]
        where = [f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack)]
        TRACE["stall"].append([time.time(), round(stalled * 1000, 1), where])


async def _ticker() -> None:
    period = 0.005
    threading.Thread(target=_watchdog, args=(threading.get_ident(),), daemon=True).start()
    while True:
        due = time.time() + period
        await asyncio.sleep(period)
        _last_tick[0] = time.time()
        late = (time.time() - due) * 1000
        if late >= 5:
            TRACE["lag"].append([due, round(late, 2)])


def _rto_min(sctp: Any) -> None:
    """Hypothesis test: a lower RTO floor (RFC 9260's 1 s is aiortc's; WebRTC stacks use less)."""
    sctp.SCTP_RTO_MIN = 0.12


EXPERIMENTS = {"rto-min": _rto_min}


def _dump() -> None:
    out = os.environ.get("P2PMED_TRACE_OUT")
    if out:
        Path(out).write_text(json.dumps(TRACE))


if __name__ == "__main__":
    install()
    atexit.register(_dump)
    from p2pmed.cli import main

    sys.exit(main(sys.argv[1:]))
