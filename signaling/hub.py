"""Sessions, endpoints, the waiting room, signaling forwarding and the blind relay.

Relay backpressure: each endpoint has one bounded outbound queue (frames and bytes).
When a frame's destination queue is full, the sender is told
{"type":"backpressure","to":E,"paused":true} and the server stops reading the
sender's socket (TCP pushes back to it) until the queue has drained to half; then
{"paused":false}. No frame is ever dropped by the server for a full queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Config
from signaling.limits import PerKeyLimiter, TokenBucket
from signaling.metrics import Metrics
from signaling.schema import SchemaError, validate
from signaling.tokens import Grant, RevocationStore, TokenError, Verifier

ALLOWED = {
    "patient": {"offer", "answer", "candidate", "leave", "audit", "ping"},
    "clinician": {"admit", "offer", "answer", "candidate", "leave", "audit", "ping"},
    "observer": {"answer", "candidate", "leave", "audit", "ping"},
}
RELAY_ROLES = {"patient", "clinician", "observer"}
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1
FAST_PATH_BUFFER = 32 * 1024
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


_HDR16 = struct.Struct(">BBH")
_HDR64 = struct.Struct(">BBQ")


def _ws_binary_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final, binary frame (server to client, no extensions)."""
    if n < 126:
        return bytes((0x82, n))
    if n < 65536:
        return _HDR16.pack(0x82, 126, n)
    return _HDR64.pack(0x82, 127, n)


async def shut(ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    """Close without waiting for buffered data to drain (a stalled client could hold it
    forever), then give the client CLOSE_TIMEOUT to answer the close frame."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=reason, drain=False), CLOSE_TIMEOUT + 1)


class Closing(Exception):
    def __init__(self, code: int, err: str, message: str) -> None:
        super().__init__(message)
        self.code, self.err, self.message = code, err, message


class Endpoint:
    def __init__(self, session: Session, grant: Grant, endpoint_id: str, ip: str) -> None:
        self.session = session
        self.id = endpoint_id
        self.id_bytes = endpoint_id.encode()
        self.prefix = bytes([len(self.id_bytes)]) + self.id_bytes
        self.role = grant.role
        self.jti = grant.jti
        self.ip = ip
        self.admitted = grant.role != "patient"
        self.ws: web.WebSocketResponse | None = None
        self.disconnected_at: float | None = None
        self.last_activity = time.monotonic()
        self.gone = False
        self.queue: deque[tuple[float, bytes | str]] = deque()
        self.qframes = 0
        self.qbytes = 0
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.writer: asyncio.Task[None] | None = None
        self.sending = False  # a reader is sending directly to this endpoint right now
        self.buffered: Callable[[], int] | None = None  # the socket's write buffer size
        self.transport: asyncio.Transport | None = None
        # fast-path relay frames (already enveloped) written in one go per loop iteration
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.batch_t = 0.0
        self.relay_pairs: dict[str, list[int]] = {}

    def info(self) -> dict[str, Any]:
        return {"endpoint_id": self.id, "role": self.role, "admitted": self.admitted}


class Session:
    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.endpoints: dict[str, Endpoint] = {}
        self.by_bytes: dict[bytes, Endpoint] = {}

    def others(self, ep: Endpoint) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e is not ep]

    def patient(self) -> Endpoint | None:
        return next((e for e in self.endpoints.values() if e.role == "patient"), None)


class Hub:
    def __init__(
        self,
        config: Config,
        *,
        verifier: Verifier,
        revocations: RevocationStore,
        audit: AuditLog,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.verifier = verifier
        self.revocations = revocations
        self.audit = audit
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self.jti_owner: dict[str, tuple[str, str]] = {}
        self.join_limiter = PerKeyLimiter(self.limits.join_rate, self.limits.join_burst)
        self.relay_frames = 0
        self.relay_bytes = 0
        self.closing = False
        _, self.revoked_rowid = revocations.revoked_since(0)
        self.connections: set[web.WebSocketResponse] = set()
        self.pending: dict[str, int] = {}  # not-yet-joined connections per IP
        metrics.attach(self.snapshot)

    # ---- metrics ----
    def snapshot(self) -> dict[str, Any]:
        connected = waiting = disconnected = 0
        queued = queued_max = 0
        for s in self.sessions.values():
            for e in s.endpoints.values():
                if e.ws is None:
                    disconnected += 1
                elif not e.admitted:
                    waiting += 1
                else:
                    connected += 1
                queued += e.qframes
                queued_max = max(queued_max, e.qframes)
        return {
            "sessions": len(self.sessions),
            "endpoints": {
                "admitted": connected,
                "waiting": waiting,
                "disconnected": disconnected,
            },
            "relay_frames": self.relay_frames,
            "relay_bytes": self.relay_bytes,
            "queued": queued,
            "queued_max": queued_max,
        }

    # ---- sending ----
    def post(self, ep: Endpoint, msg: dict[str, Any]) -> None:
        """Queue a JSON message for ep, in order with its relay frames."""
        if ep.gone:
            return
        ep.queue.append((0.0, _dumps(msg)))
        ep.wake.set()

    async def _writer(self, ep: Endpoint) -> None:
        sample = self.metrics.relay_latency
        low_frames = self.limits.queue_frames // 2
        low_bytes = self.limits.queue_bytes // 2
        while True:
            await ep.wake.wait()
            ep.wake.clear()
            if ep.batch:
                self._flush(ep)
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
                    if t:
                        sample.observe(time.perf_counter() - t)
                    if (
                        not ep.space.is_set()
                        and ep.qframes <= low_frames
                        and ep.qbytes <= low_bytes
                    ):
                        ep.space.set()

    async def send_now(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        """Send now, bypassing the queue; a client that does not read cannot hold us."""
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.send_str(_dumps(msg)), CLOSE_TIMEOUT)

    async def close_ws(self, ws: web.WebSocketResponse, code: int, err: str, message: str) -> None:
        self.metrics.closes.labels(str(code)).inc()
        await self.send_now(ws, {"type": "error", "code": err, "message": message})
        await shut(ws, code, err.encode()[:120])

    # ---- connection ----
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
        self.pending[ip] = self.pending.get(ip, 0) + 1
        pending = True
        try:
            if self.pending[ip] > self.limits.pending_per_ip:
                self.metrics.limit_violations.labels("pending-per-ip").inc()
                self.reject("pending-per-ip", ip)
                raise Closing(
                    cc.RATE_LIMITED, "too-many-connections", "too many unjoined connections"
                )
            ep = await self._await_join(ws, ip)
            self._unpend(ip)
            pending = False
            if ep is not None:
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
            if pending:
                self._unpend(ip)
            self.connections.discard(ws)
            if ep is not None and ep.ws is ws and not ep.gone:
                self._disconnected(ep)
            if not ws.closed:
                await shut(ws, cc.NORMAL, b"")
        return ws

    def _unpend(self, ip: str) -> None:
        left = self.pending.get(ip, 1) - 1
        if left > 0:
            self.pending[ip] = left
        else:
            self.pending.pop(ip, None)

    def _bad(self, ws_errors: list[int], err: str) -> None:
        self.metrics.errors.labels(err).inc()
        ws_errors[0] += 1
        if ws_errors[0] > self.limits.max_errors:
            self.metrics.limit_violations.labels("errors").inc()
            raise Closing(cc.PROTOCOL, "too-many-errors", "too many bad messages")

    async def _await_join(self, ws: web.WebSocketResponse, ip: str) -> Endpoint | None:
        errors = [0]
        deadline = time.monotonic() + self.limits.join_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.metrics.rejected_joins.labels("join-timeout").inc()
                raise Closing(cc.TIMEOUT, "join-timeout", "no join message in time")
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return None
            if msg.type == WSMsgType.ERROR:
                self._ws_error(msg.data)
                return None
            if msg.type != WSMsgType.TEXT:
                await self._error(ws, "not-joined", "send join before relay frames")
                self._bad(errors, "not-joined")
                continue
            try:
                data = validate(json.loads(msg.data))
            except (ValueError, SchemaError) as e:
                await self._error(ws, "bad-message", getattr(e, "message", "invalid JSON"))
                self._bad(errors, "bad-message")
                continue
            if data["type"] != "join":
                await self._error(ws, "not-joined", f"{data['type']} before join")
                self._bad(errors, "not-joined")
                continue
            return await self._join(ws, data, ip)

    def _ws_error(self, exc: object) -> None:
        if getattr(exc, "code", None) == cc.MESSAGE_TOO_BIG:
            self.metrics.limit_violations.labels("message-size").inc()
            self.metrics.closes.labels(str(cc.MESSAGE_TOO_BIG)).inc()

    async def _error(
        self, ws: web.WebSocketResponse, code: str, message: str, **extra: Any
    ) -> None:
        await self.send_now(ws, {"type": "error", "code": code, "message": message, **extra})

    def reject(self, reason: str, ip: str, **fields: Any) -> None:
        self.metrics.rejected_joins.labels(reason).inc()
        self.audit.append("reject", reason=reason, ip=ip, **fields)
        logs.event("join-rejected", reason=reason, **fields)

    async def _join(self, ws: web.WebSocketResponse, data: dict[str, Any], ip: str) -> Endpoint:
        t0 = time.perf_counter()
        eid = data["endpoint_id"]
        now = time.monotonic()
        if not self.join_limiter.take(ip, now):
            self.metrics.limit_violations.labels("join-rate").inc()
            self.reject("join-rate", ip)
            raise Closing(
                cc.RATE_LIMITED, "too-many-joins", "too many join attempts from this address"
            )
        try:
            grant = self.verifier.verify(data["token"])
        except TokenError as e:
            self.reject(f"token-{e.reason}", ip, endpoint_id=eid)
            raise Closing(cc.UNAUTHORIZED, f"token-{e.reason}", str(e)) from None
        fields = {
            "session": grant.session,
            "endpoint_id": eid,
            "role": grant.role,
            "jti": grant.jti,
        }
        if data.get("session", grant.session) != grant.session:
            self.reject("wrong-session", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "wrong-session", "token is for another session")
        owner = self.jti_owner.get(grant.jti)
        if owner is not None and owner != (grant.session, eid):
            self.reject("token-in-use", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "token-in-use", "token already used by another endpoint")
        session = self.sessions.get(grant.session)
        old = session.endpoints.get(eid) if session else None
        if old is not None:
            if old.role != grant.role:
                self.reject("role-mismatch", ip, **fields)
                raise Closing(
                    cc.FORBIDDEN, "role-mismatch", "endpoint_id is in use with another role"
                )
            return await self._takeover(ws, old, grant, ip, t0)
        if session is None and len(self.sessions) >= self.limits.max_sessions:
            self.metrics.limit_violations.labels("sessions").inc()
            self.reject("server-full", ip, **fields)
            raise Closing(cc.CAPACITY, "server-full", "too many sessions on this server")
        if session is not None:
            if len(session.endpoints) >= self.limits.max_endpoints_per_session:
                self.metrics.limit_violations.labels("endpoints-per-session").inc()
                self.reject("session-full", ip, **fields)
                raise Closing(cc.CAPACITY, "session-full", "too many endpoints in this session")
            if grant.role == "patient" and session.patient() is not None:
                self.reject("patient-present", ip, **fields)
                raise Closing(cc.FORBIDDEN, "patient-present", "the session already has a patient")
        if session is None:
            session = self.sessions[grant.session] = Session(grant.session)
            self.audit.append("session-start", session=grant.session)
        ep = Endpoint(session, grant, eid, ip)
        ep.ws = ws
        session.endpoints[eid] = ep
        session.by_bytes[ep.id_bytes] = ep
        self.jti_owner[grant.jti] = (grant.session, eid)
        ep.writer = asyncio.get_running_loop().create_task(self._writer(ep))
        self.audit.append("join", ip=ip, waiting=not ep.admitted, **fields)
        self.metrics.joins.labels(grant.role).inc()
        logs.event("join", session=session.id, endpoint_id=eid, role=grant.role)
        others = session.others(ep)
        self.post(ep, self._joined(ep, others))
        if not ep.admitted:
            for o in others:
                if o.role == "clinician" and o.admitted:
                    self.post(o, {"type": "peer-waiting", "endpoint_id": eid, "role": ep.role})
        else:
            for o in others:
                if o.admitted:
                    self.post(o, {"type": "peer-joined", "endpoint_id": eid, "role": ep.role})
                    self.post(ep, {"type": "peer-joined", "endpoint_id": o.id, "role": o.role})
                elif ep.role == "clinician":
                    self.post(ep, {"type": "peer-waiting", "endpoint_id": o.id, "role": o.role})
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def _joined(self, ep: Endpoint, others: list[Endpoint]) -> dict[str, Any]:
        return {
            "type": "joined",
            "session": ep.session.id,
            "role": ep.role,
            "endpoint_id": ep.id,
            "waiting": not ep.admitted,
            "peers": [o.info() for o in others],
        }

    async def _takeover(
        self, ws: web.WebSocketResponse, ep: Endpoint, grant: Grant, ip: str, t0: float
    ) -> Endpoint:
        old_ws = ep.ws
        ep.ws = ws
        ep.disconnected_at = None
        ep.last_activity = time.monotonic()
        if ep.jti != grant.jti:
            self.jti_owner.pop(ep.jti, None)
            ep.jti = grant.jti
            self.jti_owner[grant.jti] = (ep.session.id, ep.id)
        ep.ip = ip
        # JSON queued for the old connection is stale (the new one gets a fresh "joined");
        # relay frames stay queued and go to the new connection in order.
        ep.queue = deque(item for item in ep.queue if not isinstance(item[1], str))
        if old_ws is not None and not old_ws.closed:
            await self.close_ws(old_ws, cc.REPLACED, "replaced", "another connection took over")
        self.audit.append(
            "reconnect",
            session=ep.session.id,
            endpoint_id=ep.id,
            role=ep.role,
            jti=grant.jti,
            ip=ip,
        )
        logs.event("reconnect", session=ep.session.id, endpoint_id=ep.id, role=ep.role)
        others = ep.session.others(ep)
        ep.queue.appendleft((0.0, _dumps(self._joined(ep, others))))
        ep.wake.set()
        for o in others:
            if ep.admitted or o.role == "clinician":
                self.post(o, {"type": "peer-reconnected", "endpoint_id": ep.id})
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def _disconnected(self, ep: Endpoint) -> None:
        ep.ws = None
        ep.disconnected_at = time.monotonic()
        logs.event("disconnected", session=ep.session.id, endpoint_id=ep.id)

    def remove(self, ep: Endpoint, why: str) -> None:
        if ep.gone:
            return
        ep.gone = True
        s = ep.session
        s.endpoints.pop(ep.id, None)
        s.by_bytes.pop(ep.id_bytes, None)
        if self.jti_owner.get(ep.jti) == (s.id, ep.id):
            del self.jti_owner[ep.jti]
        for dst, (frames, nbytes) in ep.relay_pairs.items():
            self.audit.append(
                "relay-stop", session=s.id, src=ep.id, dst=dst, frames=frames, bytes=nbytes
            )
        self.audit.append("leave", session=s.id, endpoint_id=ep.id, role=ep.role, why=why)
        logs.event("leave", session=s.id, endpoint_id=ep.id, role=ep.role, why=why)
        for o in s.endpoints.values():
            self.post(o, {"type": "peer-left", "endpoint_id": ep.id})
        ep.space.set()  # release senders held on this queue; they find the peer gone
        if ep.writer is not None:
            ep.writer.cancel()
        ep.queue.clear()
        ep.qframes = ep.qbytes = 0
        if not s.endpoints:
            del self.sessions[s.id]
            self.audit.append("session-end", session=s.id)

    # ---- messages ----
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

    async def _text(
        self, ws: web.WebSocketResponse, ep: Endpoint, raw: str, errors: list[int]
    ) -> bool:
        t0 = time.perf_counter()
        try:
            data = validate(json.loads(raw))
        except (ValueError, SchemaError) as e:
            await self._error(ws, "bad-message", getattr(e, "message", "invalid JSON"))
            self._bad(errors, "bad-message")
            return False
        kind = data["type"]
        self.metrics.messages.labels(kind).inc()
        if kind == "join":
            await self._error(ws, "already-joined", "this connection already joined")
            self._bad(errors, "already-joined")
            return False
        if kind not in ALLOWED[ep.role]:
            self.audit.append(
                "forbidden", session=ep.session.id, endpoint_id=ep.id, role=ep.role, action=kind
            )
            self.metrics.rejected_joins.labels("role-action").inc()
            await self._error(ws, "forbidden", f"role {ep.role} may not send {kind}")
            self._bad(errors, "forbidden")
            return False
        if kind == "leave":
            self.remove(ep, "leave")
            await shut(ws, cc.NORMAL, b"left")
            return True
        if kind == "ping":  # keeps an active user's endpoint from the idle logoff
            pong: dict[str, Any] = {"type": "pong"}
            if "id" in data:
                pong["id"] = data["id"]
            self.post(ep, pong)
            return False
        if kind == "audit":
            self.audit.append(
                data["event"],
                session=ep.session.id,
                endpoint_id=ep.id,
                role=ep.role,
                alarm_id=data["alarm_id"],
            )
            return False
        if kind == "admit":
            await self._admit(ws, ep, data["endpoint_id"], errors)
            return False
        # offer / answer / candidate
        dst = ep.session.endpoints.get(data["to"])
        if dst is None or dst is ep:
            await self._error(ws, "unknown-peer", f"no endpoint {data['to']!r} here", to=data["to"])
            self._bad(errors, "unknown-peer")
            return False
        if not (ep.admitted and dst.admitted):
            await self._error(ws, "not-admitted", "both endpoints must be admitted", to=dst.id)
            self._bad(errors, "not-admitted")
            return False
        if dst.ws is None:
            await self._error(ws, "peer-disconnected", f"{dst.id} is reconnecting", to=dst.id)
            return False
        data["from"] = ep.id
        self.post(dst, data)
        self.metrics.signaling_latency.observe(time.perf_counter() - t0)
        return False

    async def _admit(
        self, ws: web.WebSocketResponse, ep: Endpoint, target: str, errors: list[int]
    ) -> None:
        p = ep.session.endpoints.get(target)
        if p is None or p.admitted:
            await self._error(ws, "not-waiting", f"{target!r} is not in the waiting room")
            self._bad(errors, "not-waiting")
            return
        p.admitted = True
        self.audit.append("admit", session=ep.session.id, endpoint_id=p.id, by=ep.id)
        logs.event("admit", session=ep.session.id, endpoint_id=p.id, by=ep.id)
        self.post(p, {"type": "admitted", "by": ep.id})
        for o in ep.session.others(p):
            if o.admitted:
                self.post(o, {"type": "peer-joined", "endpoint_id": p.id, "role": p.role})
                self.post(p, {"type": "peer-joined", "endpoint_id": o.id, "role": o.role})

    async def _relay(
        self, ws: web.WebSocketResponse, ep: Endpoint, data: bytes, errors: list[int]
    ) -> None:
        n = data[0] if data else 0
        if n == 0 or len(data) <= 1 + n:
            self.metrics.relay_rejected.labels("envelope").inc()
            await self._error(ws, "bad-envelope", "relay frame needs u8 n, n-byte id and a frame")
            self._bad(errors, "bad-envelope")
            return
        key = data[1 : 1 + n]
        dst = ep.session.by_bytes.get(key)
        if dst is None or dst is ep:
            self.metrics.relay_rejected.labels("unknown-peer").inc()
            to = key.decode("utf-8", "replace")
            await self._error(ws, "unknown-peer", "relay destination not in session", to=to)
            self._bad(errors, "unknown-peer")
            return
        if not (ep.admitted and dst.admitted):
            self.metrics.relay_rejected.labels("not-admitted").inc()
            await self._error(ws, "not-admitted", "both endpoints must be admitted", to=dst.id)
            self._bad(errors, "not-admitted")
            return
        lim = self.limits
        if dst.qframes >= lim.queue_frames or dst.qbytes >= lim.queue_bytes:
            await self._hold(ws, ep, dst)
            if dst.gone:
                self.metrics.relay_rejected.labels("peer-gone").inc()
                await self._error(ws, "unknown-peer", "relay destination left", to=dst.id)
                return
        out = ep.prefix + memoryview(data)[1 + n :]
        if dst.id not in ep.relay_pairs:
            ep.relay_pairs[dst.id] = [0, 0]
            self.audit.append("relay-start", session=ep.session.id, src=ep.id, dst=dst.id)
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
        t = time.perf_counter() if self.relay_frames % SAMPLE_EVERY == 0 else 0.0
        dst.queue.append((t, out))
        dst.qframes += 1
        dst.qbytes += len(out)
        if dst.qframes >= lim.queue_frames or dst.qbytes >= lim.queue_bytes:
            dst.space.clear()
        dst.wake.set()

    def _count(self, ep: Endpoint, dst: Endpoint, out: bytes) -> None:
        self.relay_frames += 1
        self.relay_bytes += len(out)
        pair = ep.relay_pairs[dst.id]
        pair[0] += 1
        pair[1] += len(out)

    def _flush(self, dst: Endpoint) -> None:
        """Write the batched relay frames of dst as WebSocket binary frames, one write()."""
        batch = dst.batch
        if not batch:
            return
        dst.batch = []
        dst.batch_bytes = 0
        ws, tr = dst.ws, dst.transport
        if ws is None or ws.closed or tr is None or tr.is_closing():
            for out in reversed(batch):  # the connection that takes over gets them, in order
                dst.queue.appendleft((0.0, out))
                dst.qframes += 1
                dst.qbytes += len(out)
            dst.wake.set()
            return
        tr.write(b"".join([_ws_binary_header(len(out)) + out for out in batch]))
        self.metrics.relay_latency.observe(time.perf_counter() - dst.batch_t)
        if dst.queue:
            dst.wake.set()

    async def _send_direct(self, ep: Endpoint, dst: Endpoint, out: bytes) -> None:
        self._count(ep, dst, out)
        ws_dst = dst.ws
        assert ws_dst is not None
        t = time.perf_counter() if self.relay_frames % SAMPLE_EVERY == 0 else 0.0
        dst.sending = True
        try:
            await ws_dst.send_bytes(out)
        except Exception:
            self._requeue(dst, ws_dst, out)
        else:
            if t:
                self.metrics.relay_latency.observe(time.perf_counter() - t)
        finally:
            dst.sending = False
            if dst.queue:
                dst.wake.set()

    def _requeue(self, dst: Endpoint, ws_dst: web.WebSocketResponse, out: bytes) -> None:
        """The connection was lost mid-send: the frame waits for the one that takes over."""
        dst.queue.appendleft((0.0, out))
        dst.qframes += 1
        dst.qbytes += len(out)
        if dst.ws is ws_dst:
            dst.ws = None

    async def _hold(self, ws: web.WebSocketResponse, ep: Endpoint, dst: Endpoint) -> None:
        self.metrics.backpressure.inc()
        dst.space.clear()
        await self.send_now(ws, {"type": "backpressure", "to": dst.id, "paused": True})
        while not dst.space.is_set() and not dst.gone and ep.ws is ws:
            await dst.space.wait()
        await self.send_now(ws, {"type": "backpressure", "to": dst.id, "paused": False})

    # ---- housekeeping ----
    def sweep(self) -> list[tuple[web.WebSocketResponse, int, str, str]]:
        """Idle logoff, reconnect-grace expiry and revocation; returns sockets to close."""
        now = time.monotonic()
        closes: list[tuple[web.WebSocketResponse, int, str, str]] = []
        # revocations written since the last sweep (by `p2pmed token revoke`, any process)
        fresh, self.revoked_rowid = self.revocations.revoked_since(self.revoked_rowid)
        revoked = {j for j in fresh if j in self.jti_owner}
        eps = [e for s in self.sessions.values() for e in s.endpoints.values()]
        for e in eps:
            if e.jti in revoked:
                self.audit.append("revoked", session=e.session.id, endpoint_id=e.id, jti=e.jti)
                if e.ws is not None:
                    closes.append((e.ws, cc.REVOKED, "token-revoked", "token was revoked"))
                e.ws = None
                self.remove(e, "revoked")
            elif e.ws is not None and now - e.last_activity > self.config.idle_timeout:
                self.metrics.idle_logoffs.inc()
                self.audit.append("logoff", session=e.session.id, endpoint_id=e.id, role=e.role)
                closes.append((e.ws, cc.TIMEOUT, "idle-timeout", "logged off after inactivity"))
                e.ws = None
                self.remove(e, "idle")
            elif (
                e.ws is None
                and e.disconnected_at is not None
                and now - e.disconnected_at > self.config.reconnect_grace
            ):
                self.remove(e, "disconnected")
        return closes
