"""The blind relay: per-endpoint outbound queues, the slow path, batched writes, backpressure.

Relay backpressure: each endpoint has one bounded outbound queue (frames and bytes).
When a frame's destination queue is full, the sender is told
{"type":"backpressure","to":E,"paused":true} and the server stops reading the
sender's socket (TCP pushes back to it) until the queue has drained to half; then
{"paused":false}. No frame is ever dropped by the server for a full queue.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from signaling.audit import AuditLog
from signaling.config import Limits
from signaling.endpoint import Endpoint, dumps
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.replies import Replies, send_now

RELAY_ROLES = {"patient", "clinician", "observer"}
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1
FAST_PATH_BUFFER = 32 * 1024

_HDR16 = struct.Struct(">BBH")
_HDR64 = struct.Struct(">BBQ")


def _ws_binary_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final, binary frame (server to client, no extensions)."""
    if n < 126:
        return bytes((0x82, n))
    if n < 65536:
        return _HDR16.pack(0x82, 126, n)
    return _HDR64.pack(0x82, 127, n)


class Relay:
    """Owns the relay counters; writes the queues of the endpoints in `local`."""

    def __init__(
        self,
        limits: Limits,
        audit: AuditLog,
        metrics: Metrics,
        replies: Replies,
        local: LocalEndpoints,
    ) -> None:
        self.limits = limits
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.local = local
        self.frames = 0  # relayed since start
        self.nbytes = 0
        # in a cluster: relays a frame to an endpoint another server holds (remote.py)
        self.remote: (
            Callable[[web.WebSocketResponse, Endpoint, bytes, bytes, list[int]], Awaitable[None]]
            | None
        ) = None

    def post(self, ep: Endpoint, msg: dict[str, Any]) -> None:
        """Queue a JSON message for ep, in order with its relay frames."""
        if ep.gone:
            return
        ep.queue.append((None, dumps(msg)))
        ep.wake.set()

    async def writer(self, ep: Endpoint) -> None:
        sample = self.metrics.relay_latency
        low_frames = self.limits.queue_frames // 2
        low_bytes = self.limits.queue_bytes // 2
        while True:
            await ep.wake.wait()
            ep.wake.clear()
            if ep.batch:
                self.flush(ep)
            while ep.queue and ep.ws is not None and not ep.sending:
                ws = ep.ws
                t, item = ep.queue[0]
                try:
                    if isinstance(item, str):
                        await ws.send_str(item)
                    else:
                        await ws.send_bytes(item)
                except Exception:
                    # connection lost: keep the item for the connection that takes over
                    if ep.ws is ws:
                        ep.ws = None
                    break
                ep.queue.popleft()
                if not isinstance(item, str):
                    ep.qframes -= 1
                    ep.qbytes -= len(item)
                    if t is not None:
                        sample.observe(time.perf_counter() - t)
                    if (
                        not ep.space.is_set()
                        and ep.qframes <= low_frames
                        and ep.qbytes <= low_bytes
                    ):
                        ep.space.set()

    async def slow(
        self, ws: web.WebSocketResponse, ep: Endpoint, data: bytes, errors: list[int]
    ) -> None:
        """One relay frame that the read loop's fast path (hub.py) did not take."""
        n = data[0] if data else 0
        if n == 0 or len(data) <= 1 + n:
            self.metrics.relay_rejected.labels("envelope").inc()
            await self.replies.error(
                ws, "bad-envelope", "relay frame needs u8 n, n-byte id and a frame"
            )
            self.replies.bad(errors, "bad-envelope")
            return
        key = data[1 : 1 + n]
        dst = self.local.routes(ep.session).get(key)
        if dst is None and self.remote is not None:
            await self.remote(ws, ep, key, data, errors)
            return
        if dst is None or dst is ep:
            self.metrics.relay_rejected.labels("unknown-peer").inc()
            to = key.decode("utf-8", "replace")
            await self.replies.error(ws, "unknown-peer", "relay destination not in session", to=to)
            self.replies.bad(errors, "unknown-peer")
            return
        if not (ep.admitted and dst.admitted):
            self.metrics.relay_rejected.labels("not-admitted").inc()
            await self.replies.error(
                ws, "not-admitted", "both endpoints must be admitted", to=dst.id
            )
            self.replies.bad(errors, "not-admitted")
            return
        lim = self.limits
        if dst.qframes >= lim.queue_frames or dst.qbytes >= lim.queue_bytes:
            await self._hold(ws, ep, dst)
            if dst.gone:
                self.metrics.relay_rejected.labels("peer-gone").inc()
                await self.replies.error(ws, "unknown-peer", "relay destination left", to=dst.id)
                return
        out = ep.prefix + memoryview(data)[1 + n :]
        if dst.id not in ep.relay_pairs:
            ep.relay_pairs[dst.id] = [0, 0]
            self.audit.append("relay-start", session=ep.session, src=ep.id, dst=dst.id)
        if (
            not dst.queue
            and not dst.sending
            and not dst.batch
            and dst.ws is not None
            and dst.buffered is not None
            and dst.buffered() < FAST_PATH_BUFFER
        ):
            await self._send_direct(ep, dst, out)
            return
        self._count(ep, dst, out)
        t = time.perf_counter() if self.frames % SAMPLE_EVERY == 0 else None
        dst.queue.append((t, out))
        dst.qframes += 1
        dst.qbytes += len(out)
        if dst.qframes >= lim.queue_frames or dst.qbytes >= lim.queue_bytes:
            dst.space.clear()
        dst.wake.set()

    def _count(self, ep: Endpoint, dst: Endpoint, out: bytes) -> None:
        self.frames += 1
        self.nbytes += len(out)
        pair = ep.relay_pairs[dst.id]
        pair[0] += 1
        pair[1] += len(out)

    def flush(self, dst: Endpoint) -> None:
        """Write the batched relay frames of dst as WebSocket binary frames, one write()."""
        batch = dst.batch
        if not batch:
            return
        dst.batch = []
        dst.batch_bytes = 0
        ws, tr = dst.ws, dst.transport
        if ws is None or ws.closed or tr is None or tr.is_closing():
            for out in reversed(batch):  # the connection that takes over gets them, in order
                dst.queue.appendleft((None, out))
                dst.qframes += 1
                dst.qbytes += len(out)
            dst.wake.set()
            return
        tr.write(b"".join([_ws_binary_header(len(out)) + out for out in batch]))
        if dst.batch_t is not None:
            self.metrics.relay_latency.observe(time.perf_counter() - dst.batch_t)
            dst.batch_t = None
        if dst.queue:
            dst.wake.set()

    async def _send_direct(self, ep: Endpoint, dst: Endpoint, out: bytes) -> None:
        self._count(ep, dst, out)
        ws_dst = dst.ws
        assert ws_dst is not None
        t = time.perf_counter() if self.frames % SAMPLE_EVERY == 0 else None
        dst.sending = True
        try:
            await ws_dst.send_bytes(out)
        except Exception:
            self._requeue(dst, ws_dst, out)
        else:
            if t is not None:
                self.metrics.relay_latency.observe(time.perf_counter() - t)
        finally:
            dst.sending = False
            if dst.queue:
                dst.wake.set()

    def _requeue(self, dst: Endpoint, ws_dst: web.WebSocketResponse, out: bytes) -> None:
        """The connection was lost mid-send: the frame waits for the one that takes over."""
        dst.queue.appendleft((None, out))
        dst.qframes += 1
        dst.qbytes += len(out)
        if dst.ws is ws_dst:
            dst.ws = None

    async def _hold(self, ws: web.WebSocketResponse, ep: Endpoint, dst: Endpoint) -> None:
        self.metrics.backpressure.inc()
        dst.space.clear()
        await send_now(ws, {"type": "backpressure", "to": dst.id, "paused": True})
        while not dst.space.is_set() and not dst.gone and ep.ws is ws:
            await dst.space.wait()
        await send_now(ws, {"type": "backpressure", "to": dst.id, "paused": False})

    def end(self, ep: Endpoint, peers: list[Endpoint]) -> None:
        """ep leaves: relaying ends both ways, ep's own pairs and every pair towards it."""
        for dst, counts in ep.relay_pairs.items():
            self._stop(ep.session, ep.id, dst, counts)
        ep.relay_pairs.clear()
        for o in peers:
            if ep.id in o.relay_pairs:
                self._stop(ep.session, o.id, ep.id, o.relay_pairs.pop(ep.id))

    def stop_all(self) -> None:
        """At shutdown: a relay-stop entry for every pair still relaying."""
        for e in self.local.all():
            for dst, counts in e.relay_pairs.items():
                self._stop(e.session, e.id, dst, counts)
            e.relay_pairs.clear()

    def _stop(self, session: str, src: str, dst: str, counts: list[int]) -> None:
        frames, nbytes = counts
        self.audit.append(
            "relay-stop", session=session, src=src, dst=dst, frames=frames, bytes=nbytes
        )
