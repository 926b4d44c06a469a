"""The hub: the parts that serve sessions, joined, and the per-connection read loop.

Each part is an object of its own module that owns its state and is given the parts it uses:
  state.store.SessionStore  sessions, endpoints, the waiting room (state/memory.py: in memory)
  local.LocalEndpoints      the endpoints this server holds: connection, queues (endpoint.py)
  replies.Replies           error replies, closes, rejected joins (no state)
  relay.Relay               relay counters; queue writers, slow path, batches, backpressure
  revoking.Revocations      revocations waiting for their peers' confirmation
  joins.Joins               the join limiter; join, reconnect takeover, admit, leave
  messages.Messages         signaling messages and forwarding (no state)
  sweep.Sweeper             idle logoff, grace expiry, revocations: how far it has read them
The hub itself owns the open WebSockets and the shutting-down flag. The read loop inlines
the relay fast path (it runs per frame); its checks must stay in step with Relay.slow and
Relay.flush.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.bindings import BindingStore
from signaling.config import Config
from signaling.endpoint import CLOSE_TIMEOUT, Closing, Endpoint, shut
from signaling.joins import Joins
from signaling.limits import TokenBucket
from signaling.listen import ConnectionGuard
from signaling.local import LocalEndpoints
from signaling.messages import ALLOWED, Messages
from signaling.metrics import Metrics
from signaling.proxies import TrustedProxies
from signaling.relay import FAST_PATH_BUFFER, RELAY_ROLES, SAMPLE_EVERY, SAMPLE_MASK, Relay
from signaling.remote import FrameBus, RemoteRelay
from signaling.replies import Replies, send_now
from signaling.revoking import LINKED, Revocations
from signaling.state.memory import MemorySessionStore
from signaling.state.store import SessionStore
from signaling.sweep import Sweeper
from signaling.tokens import RevocationStore, Verifier
from signaling.wards import ClusterWards, Wards

# A ward's central station (wards.py) holds only its ward connection: it sends no signaling
# and holds no E2E session itself (its per-bed clinician endpoints do).
ALLOWED.setdefault("station", {"leave", "ping"})
LINKED.setdefault("station", ())

__all__ = [
    "ALLOWED",
    "CLOSE_TIMEOUT",
    "FAST_PATH_BUFFER",
    "RELAY_ROLES",
    "SAMPLE_EVERY",
    "SAMPLE_MASK",
    "Closing",
    "Endpoint",
    "Hub",
    "shut",
]


class Hub:
    def __init__(
        self,
        config: Config,
        *,
        verifier: Verifier,
        revocations: RevocationStore,
        bindings: BindingStore,
        audit: AuditLog,
        metrics: Metrics,
        store: SessionStore | None = None,
        bus: FrameBus | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.verifier = verifier
        self.revoked = revocations  # the revocation store (tokens.py), read by the sweep
        self.bindings = bindings
        self.audit = audit
        self.metrics = metrics
        self.store: SessionStore = MemorySessionStore(bindings) if store is None else store
        self.bus = bus
        self.local = LocalEndpoints()
        self.replies = Replies(config.limits, audit, metrics)
        self.relay = Relay(config.limits, audit, metrics, self.replies, self.local)
        self.remote: RemoteRelay | None = None
        if bus is not None:
            self.remote = RemoteRelay(
                config.limits,
                audit=audit,
                metrics=metrics,
                replies=self.replies,
                relay=self.relay,
                local=self.local,
                store=self.store,
                bus=bus,
            )
            self.relay.remote = self.remote.send
        self.revocations = Revocations(
            config.revoke_timeout, audit, metrics, self.relay, self.local
        )
        self.joins = Joins(
            config,
            store=self.store,
            local=self.local,
            verifier=verifier,
            audit=audit,
            metrics=metrics,
            replies=self.replies,
            relay=self.relay,
            revocations=self.revocations,
            bus=bus,
        )
        ward_parts: dict[str, Any] = {
            "store": self.store,
            "local": self.local,
            "verifier": verifier,
            "audit": audit,
            "metrics": metrics,
            "replies": self.replies,
            "relay": self.relay,
        }
        if bus is None:
            self.joins.wards = Wards(config, **ward_parts)
        else:  # a cluster: the ward registry in the store's Redis, shared by the servers
            from signaling.state.redis import RedisSessionStore
            from signaling.state.wards_redis import RedisWardRegistry

            assert isinstance(self.store, RedisSessionStore)
            self.joins.wards = ClusterWards(
                config,
                registry=RedisWardRegistry(self.store.r, self.store.p),
                bus=bus,
                remove=self.joins.remove,
                **ward_parts,
            )
        self.messages = Messages(
            local=self.local,
            audit=audit,
            metrics=metrics,
            replies=self.replies,
            relay=self.relay,
            joins=self.joins,
            revocations=self.revocations,
        )
        self.sweeper = Sweeper(
            config,
            store=self.store,
            local=self.local,
            revoked=revocations,
            audit=audit,
            metrics=metrics,
            relay=self.relay,
            joins=self.joins,
            revocations=self.revocations,
        )
        self.proxies = TrustedProxies(config.trusted_proxies)
        self.closing = False
        self.sweep_now = asyncio.Event()  # set to run the sweep at once (a revocation came)
        self.connections: set[web.WebSocketResponse] = set()
        self.guard: ConnectionGuard | None = None  # per-IP cap before the upgrade (listen.py)
        metrics.attach(self.snapshot)

    def snapshot(self) -> dict[str, Any]:
        connected = waiting = disconnected = 0
        queued = queued_max = 0
        for e in self.local.all():
            if e.ws is None:
                disconnected += 1
            elif not e.admitted:
                waiting += 1
            else:
                connected += 1
            queued += e.qframes
            queued_max = max(queued_max, e.qframes)
        return {
            "sessions": self.store.session_count(),
            "endpoints": {
                "admitted": connected,
                "waiting": waiting,
                "disconnected": disconnected,
            },
            "relay_frames": self.relay.frames,
            "relay_bytes": self.relay.nbytes,
            "queued": queued,
            "queued_max": queued_max,
            "unjoined": self.guard.total() if self.guard is not None else 0,
            "audit_head_seq": max(self.audit.head_seq, 0),
            "audit_held": self.audit.held,
        }

    def client_ip(self, request: web.Request) -> str:
        """The client's address: the TCP peer, or behind a trusted proxy the address it
        forwarded (proxies.py); an unreadable X-Forwarded-For is counted."""
        peer = request.remote or "?"
        if not self.proxies:
            return peer
        ip, bad = self.proxies.client(peer, request.headers.getall("X-Forwarded-For", []))
        if bad:
            self.metrics.errors.labels("bad-forwarded-for").inc()
        return ip

    def endpoint(self, session: str, endpoint_id: str) -> Endpoint | None:
        """The endpoint this server holds, connected or within its reconnect grace."""
        return self.local.get(session, endpoint_id)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_msg_size,
            heartbeat=20.0,
            timeout=CLOSE_TIMEOUT,
            compress=False,  # relay frames are encrypted: deflate gains nothing
        )
        await ws.prepare(request)
        if self.closing:
            await send_now(ws, {"type": "reconnect", "after_ms": self.config.shutdown_reconnect_ms})
            await shut(ws, cc.SERVICE_RESTART, b"shutting down")
            return ws
        ip = self.client_ip(request)
        self.connections.add(ws)
        ep: Endpoint | None = None
        try:
            ep = await self.joins.await_join(ws, ip)
            if ep is not None:
                if self.guard is not None:
                    self.guard.joined(request.transport)  # no longer counts against its IP
                tr = request.transport
                ep.buffered = getattr(tr, "get_write_buffer_size", None)
                ep.transport = tr
                await self._serve(ws, ep)
        except Closing as c:
            await self.replies.close_ws(ws, c.code, c.err, c.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug must cost one connection, never the server
            logs.log.exception("connection-error")
            await self.replies.close_ws(ws, cc.INTERNAL, "internal-error", "internal server error")
        finally:
            self.connections.discard(ws)
            if ep is not None and ep.ws is ws and not ep.gone:
                self.joins.disconnected(ep)
            if not ws.closed:
                await shut(ws, cc.NORMAL, b"")
        return ws

    async def _serve(self, ws: web.WebSocketResponse, ep: Endpoint) -> None:
        """The per-connection loop. The relay fast path is inlined: it runs per frame."""
        errors = [0]
        lim = self.limits
        msg_bucket = TokenBucket(lim.msg_rate, lim.msg_burst)
        rate, burst = lim.relay_rate, lim.relay_burst
        tokens, last = burst, time.monotonic()
        by_bytes, pairs, prefix = self.local.routes(ep.session), ep.relay_pairs, ep.prefix
        relay, text_message = self.relay, self.messages.text
        monotonic = time.monotonic
        loop = asyncio.get_running_loop()
        binary, text = WSMsgType.BINARY, WSMsgType.TEXT
        async for msg in ws:
            if ep.ws is not ws:
                return
            now = monotonic()
            ep.last_activity = now
            if msg.type is binary:
                tokens = min(burst, tokens + (now - last) * rate) - 1.0
                last = now
                if tokens < 0:
                    self.metrics.limit_violations.labels("relay-rate").inc()
                    raise Closing(
                        cc.RATE_LIMITED, "rate-limited", "too many relay frames per second"
                    )
                data = msg.data
                n = data[0] if data else 0
                dst = by_bytes.get(data[1 : 1 + n]) if 0 < n < len(data) - 1 else None
                ws_dst = dst.ws if dst is not None else None
                if (
                    ws_dst is None
                    or dst is None
                    or dst is ep
                    or dst.queue
                    or dst.sending
                    or not (ep.member.admitted and dst.member.admitted)
                    or dst.buffered is None
                    or dst.transport is None
                    or dst.buffered() + dst.batch_bytes >= FAST_PATH_BUFFER
                    or dst.id not in pairs
                ):
                    await relay.slow(ws, ep, data, errors)
                    continue
                # fast path, in order by construction: nothing queued, nobody sending, and
                # the socket takes it without waiting. Frames for one destination are
                # written with one syscall at the end of this loop iteration.
                out = prefix + data[1 + n :]
                relay.frames += 1
                relay.nbytes += len(out)
                pair = pairs[dst.id]
                pair[0] += 1
                pair[1] += len(out)
                if not dst.batch:
                    dst.batch_t = time.perf_counter()
                    loop.call_soon(relay.flush, dst)
                dst.batch.append(out)
                dst.batch_bytes += len(out)
            elif msg.type is text:
                if not msg_bucket.take(now):
                    self.metrics.limit_violations.labels("message-rate").inc()
                    raise Closing(cc.RATE_LIMITED, "rate-limited", "too many messages per second")
                if await text_message(ws, ep, msg.data, errors):
                    return
            elif msg.type == WSMsgType.ERROR:
                self.replies.ws_error(msg.data)
                return
