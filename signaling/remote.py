"""Relay frames between endpoints held by different servers of a cluster (issue #15).

Frames for a server go out on its Redis pub/sub channel `rl:{server}`, batched per event-loop
turn into one PUBLISH (docs/scaling.md says why pub/sub and not streams). Pub/sub itself
has no flow control, so this adds credits: a sending server has at most WINDOW frames in
flight towards one destination endpoint; the receiving server returns credit once it has
queued them, and only while that endpoint's outbound queue (relay.py) is below its limit.
A slow receiver therefore stops the credits, the sender's window fills, and the sender is
told `backpressure` paused and its socket is no longer read, exactly as on one server.

Nothing is dropped silently: a frame whose destination is no longer held by the receiving
server, a batch that cannot be published, and a window whose credits never came back (the
receiving server died) are counted (p2pmed_relay_rejected_total, p2pmed_signaling_errors
_total). What is lost there is below the end-to-end core, which retransmits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any, Protocol

from aiohttp import web

from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Limits
from signaling.endpoint import Endpoint
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import FAST_PATH_BUFFER, Relay
from signaling.replies import Replies, send_now
from signaling.state.store import Bus, Member, SessionStore, StoreUnavailable

WINDOW = 256  # frames in flight per remote destination endpoint (per sending server)
CREDIT_TIMEOUT = 3.0  # no credit back this long: the receiving server is presumed gone
ROUTE_TTL = 1.0  # seconds a looked-up holder of an endpoint is trusted

_LEN = struct.Struct(">I")


class FrameBus(Bus, Protocol):
    async def send_frames(self, server: str, payload: bytes) -> None: ...


class _Window:
    __slots__ = ("inflight", "space")

    def __init__(self) -> None:
        self.inflight = 0
        self.space = asyncio.Event()
        self.space.set()


def _pack(session: str, dst: str, out: bytes) -> bytes:
    s, d = session.encode(), dst.encode()
    return bytes((len(s),)) + s + bytes((len(d),)) + d + _LEN.pack(len(out)) + out


def _unpack(payload: bytes) -> tuple[str, list[tuple[str, str, bytes]]]:
    n = payload[0]
    src = payload[1 : 1 + n].decode()
    i, end, recs = 1 + n, len(payload), []
    while i < end:
        n = payload[i]
        session = payload[i + 1 : i + 1 + n].decode()
        i += 1 + n
        n = payload[i]
        dst = payload[i + 1 : i + 1 + n].decode()
        i += 1 + n
        (size,) = _LEN.unpack_from(payload, i)
        i += 4
        recs.append((session, dst, payload[i : i + size]))
        i += size
    return src, recs


class RemoteRelay:
    def __init__(
        self,
        limits: Limits,
        *,
        audit: AuditLog,
        metrics: Metrics,
        replies: Replies,
        relay: Relay,
        local: LocalEndpoints,
        store: SessionStore,
        bus: FrameBus,
    ) -> None:
        self.limits = limits
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.relay = relay
        self.local = local
        self.store = store
        self.bus = bus
        self.server_id = bus.server_id
        self._head = bytes((len(self.server_id.encode()),)) + self.server_id.encode()
        self.routes: dict[tuple[str, str], tuple[Member | None, float]] = {}
        self.windows: dict[tuple[str, str], _Window] = {}
        self.out: dict[str, list[bytes]] = {}
        self.wake: dict[str, asyncio.Event] = {}
        self.pumps: dict[str, asyncio.Task[None]] = {}
        self._later: set[asyncio.Task[None]] = set()
        self.sent = 0  # frames published to other servers
        self.received = 0  # frames received from other servers

    async def _route(self, session: str, dst: str) -> Member | None:
        now = time.monotonic()
        hit = self.routes.get((session, dst))
        if hit is not None and now - hit[1] < ROUTE_TTL:
            return hit[0]
        m = await self.store.member(session, dst)
        if len(self.routes) > 100_000:
            self.routes.clear()
        self.routes[(session, dst)] = (m, now)
        return m

    def forget(self, session: str, endpoint_id: str) -> None:
        self.routes.pop((session, endpoint_id), None)

    async def send(
        self, ws: web.WebSocketResponse, ep: Endpoint, key: bytes, data: bytes, errors: list[int]
    ) -> None:
        """A relay frame from ep for an endpoint not held here (relay.slow found none)."""
        dst = key.decode("utf-8", "replace")
        try:
            m = await self._route(ep.session, dst)
        except StoreUnavailable:
            m = None
            self.metrics.relay_rejected.labels("store-unavailable").inc()
        if m is None or m.server in ("", self.server_id) or dst == ep.id:
            self.metrics.relay_rejected.labels("unknown-peer").inc()
            await self.replies.error(ws, "unknown-peer", "relay destination not in session", to=dst)
            self.replies.bad(errors, "unknown-peer")
            return
        if not (ep.admitted and m.admitted):
            self.metrics.relay_rejected.labels("not-admitted").inc()
            await self.replies.error(ws, "not-admitted", "both endpoints must be admitted", to=dst)
            self.replies.bad(errors, "not-admitted")
            return
        w = self.windows.get((ep.session, dst))
        if w is None:
            w = self.windows[(ep.session, dst)] = _Window()
        if w.inflight >= WINDOW:
            await self._hold(ws, ep, w, dst)
        n = data[0]
        out = ep.prefix + data[1 + n :]
        if dst not in ep.relay_pairs:
            ep.relay_pairs[dst] = [0, 0]
            self.audit.append(
                "relay-start", session=ep.session, src=ep.id, dst=dst, dst_server=m.server
            )
        relay = self.relay
        relay.frames += 1
        relay.nbytes += len(out)
        pair = ep.relay_pairs[dst]
        pair[0] += 1
        pair[1] += len(out)
        w.inflight += 1
        self._queue(m.server, _pack(ep.session, dst, out))

    async def _hold(self, ws: web.WebSocketResponse, ep: Endpoint, w: _Window, dst: str) -> None:
        self.metrics.backpressure.inc()
        w.space.clear()
        await send_now(ws, {"type": "backpressure", "to": dst, "paused": True})
        while w.inflight >= WINDOW and ep.ws is ws and not ep.gone:
            try:
                await asyncio.wait_for(w.space.wait(), CREDIT_TIMEOUT)
            except TimeoutError:
                # the receiving server died or lost its subscription: what it had not
                # queued is lost below the E2E core, which retransmits it
                self.metrics.errors.labels("relay-credit-lost").inc(w.inflight)
                logs.event("relay-credit-lost", session=ep.session, dst=dst, frames=w.inflight)
                w.inflight = 0
                self.forget(ep.session, dst)
        await send_now(ws, {"type": "backpressure", "to": dst, "paused": False})

    def _queue(self, server: str, record: bytes) -> None:
        batch = self.out.get(server)
        if batch is None:
            batch = self.out[server] = []
        batch.append(record)
        ev = self.wake.get(server)
        if ev is None:
            ev = self.wake[server] = asyncio.Event()
            self.pumps[server] = asyncio.get_running_loop().create_task(self._pump(server, ev))
        ev.set()

    async def _pump(self, server: str, ev: asyncio.Event) -> None:
        """One per destination server: PUBLISHes in order, one batch per wake-up."""
        while True:
            await ev.wait()
            ev.clear()
            batch = self.out.pop(server, [])
            if not batch:
                continue
            try:
                await self.bus.send_frames(server, self._head + b"".join(batch))
                self.sent += len(batch)
            except StoreUnavailable:
                self.metrics.relay_rejected.labels("bus-unavailable").inc(len(batch))

    async def on_frames(self, payload: bytes) -> None:
        """Frames from another server for endpoints held here; credit returned when queued."""
        src, recs = _unpack(payload)
        credits: dict[tuple[str, str], int] = {}
        loop = asyncio.get_running_loop()
        lim = self.limits
        for session, dst_id, out in recs:
            self.received += 1
            credits[(session, dst_id)] = credits.get((session, dst_id), 0) + 1
            dst = self.local.get(session, dst_id)
            if dst is None or dst.gone:
                self.metrics.relay_rejected.labels("remote-gone").inc()
                continue
            if (
                not dst.queue
                and not dst.sending
                and dst.ws is not None
                and dst.buffered is not None
                and dst.buffered() + dst.batch_bytes < FAST_PATH_BUFFER
            ):
                if not dst.batch:
                    loop.call_soon(self.relay.flush, dst)
                dst.batch.append(out)
                dst.batch_bytes += len(out)
                continue
            dst.queue.append((None, out))
            dst.qframes += 1
            dst.qbytes += len(out)
            if dst.qframes >= lim.queue_frames or dst.qbytes >= lim.queue_bytes:
                dst.space.clear()
            dst.wake.set()
        now: list[list[Any]] = []
        for (session, dst_id), n in credits.items():
            dst = self.local.get(session, dst_id)
            if dst is None or dst.space.is_set():
                now.append([session, dst_id, n])
            else:
                t = loop.create_task(self._credit_later(dst, src, n))
                self._later.add(t)
                t.add_done_callback(self._later.discard)
        if now:  # one message for all the destinations of this batch
            await self._send_credits(src, now)

    async def _credit_later(self, dst: Endpoint, src: str, n: int) -> None:
        while not dst.space.is_set() and not dst.gone:
            await dst.space.wait()
        await self._credit(src, dst.session, dst.id, n)

    async def _credit(self, server: str, session: str, dst: str, n: int) -> None:
        await self._send_credits(server, [[session, dst, n]])

    async def _send_credits(self, server: str, items: list[list[Any]]) -> None:
        try:
            await self.bus.send(server, {"op": "credit", "items": items})
        except StoreUnavailable:
            self.metrics.errors.labels("credit-unsent").inc()

    def on_credits(self, items: list[list[Any]]) -> None:
        for session, dst, n in items:
            self.on_credit(str(session), str(dst), int(n))

    def on_credit(self, session: str, dst: str, n: int) -> None:
        w = self.windows.get((session, dst))
        if w is None:
            return
        w.inflight = max(0, w.inflight - n)
        if w.inflight <= WINDOW // 2:
            w.space.set()

    async def close(self) -> None:
        tasks = [*self.pumps.values(), *self._later]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
