"""Sessions, endpoints, the waiting room, signaling forwarding and the blind relay.

Hub is built from parts, each a class in its own module and each built on the one above:
  hubbase.HubBase    shared state, metrics snapshot, error replies
  relay.Relay        per-endpoint queues, relay slow path, batched writes, backpressure
  sessions.Sessions  join, reconnect takeover, waiting room, leave
  messages.Messages  signaling messages and forwarding
  sweep.Sweeper      idle logoff, reconnect-grace expiry, revocation (on Sessions)
This module holds the connection lifecycle and the per-connection read loop. The loop
inlines the relay fast path (it runs per frame); its checks must stay in step with
Relay._relay and Relay._flush.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.endpoint import CLOSE_TIMEOUT, Closing, Endpoint, Session, shut
from signaling.limits import TokenBucket
from signaling.messages import ALLOWED, Messages
from signaling.relay import FAST_PATH_BUFFER, RELAY_ROLES, SAMPLE_EVERY, SAMPLE_MASK
from signaling.sweep import Sweeper

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
    "Session",
    "shut",
]


class Hub(Messages, Sweeper):
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            max_msg_size=self.limits.max_msg_size,
            heartbeat=20.0,
            timeout=CLOSE_TIMEOUT,
            compress=False,  # relay frames are encrypted: deflate gains nothing
        )
        await ws.prepare(request)
        if self.closing:
            await self.send_now(
                ws, {"type": "reconnect", "after_ms": self.config.shutdown_reconnect_ms}
            )
            await shut(ws, cc.SERVICE_RESTART, b"shutting down")
            return ws
        ip = request.remote or "?"
        self.connections.add(ws)
        ep: Endpoint | None = None
        try:
            ep = await self._await_join(ws, ip)
            if ep is not None:
                if self.guard is not None:
                    self.guard.joined(request.transport)  # no longer counts against its IP
                tr = request.transport
                ep.buffered = getattr(tr, "get_write_buffer_size", None)
                ep.transport = tr
                await self._serve(ws, ep)
        except Closing as c:
            await self.close_ws(ws, c.code, c.err, c.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug must cost one connection, never the server
            logs.log.exception("connection-error")
            await self.close_ws(ws, cc.INTERNAL, "internal-error", "internal server error")
        finally:
            self.connections.discard(ws)
            if ep is not None and ep.ws is ws and not ep.gone:
                self._disconnected(ep)
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
        by_bytes, pairs, prefix = ep.session.by_bytes, ep.relay_pairs, ep.prefix
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
                    or not (ep.admitted and dst.admitted)
                    or dst.buffered is None
                    or dst.transport is None
                    or dst.buffered() + dst.batch_bytes >= FAST_PATH_BUFFER
                    or dst.id not in pairs
                ):
                    await self._relay(ws, ep, data, errors)
                    continue
                # fast path, in order by construction: nothing queued, nobody sending, and
                # the socket takes it without waiting. Frames for one destination are
                # written with one syscall at the end of this loop iteration.
                out = prefix + data[1 + n :]
                self.relay_frames += 1
                self.relay_bytes += len(out)
                pair = pairs[dst.id]
                pair[0] += 1
                pair[1] += len(out)
                if not dst.batch:
                    dst.batch_t = time.perf_counter()
                    loop.call_soon(self._flush, dst)
                dst.batch.append(out)
                dst.batch_bytes += len(out)
            elif msg.type is text:
                if not msg_bucket.take(now):
                    self.metrics.limit_violations.labels("message-rate").inc()
                    raise Closing(cc.RATE_LIMITED, "rate-limited", "too many messages per second")
                if await self._text(ws, ep, msg.data, errors):
                    return
            elif msg.type == WSMsgType.ERROR:
                self._ws_error(msg.data)
                return
