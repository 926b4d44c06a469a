"""The hub's shared state, its metrics snapshot, and the replies every part of it sends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.bindings import BindingStore
from signaling.config import Config
from signaling.endpoint import CLOSE_TIMEOUT, Closing, Session, dumps, shut
from signaling.limits import PerKeyLimiter
from signaling.listen import ConnectionGuard
from signaling.metrics import Metrics
from signaling.tokens import RevocationStore, Verifier


class HubBase:
    def __init__(
        self,
        config: Config,
        *,
        verifier: Verifier,
        revocations: RevocationStore,
        bindings: BindingStore,
        audit: AuditLog,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.verifier = verifier
        self.revocations = revocations
        self.bindings = bindings  # join token -> endpoint, on disk (survives leave/restart)
        self.audit = audit
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self.revoking: dict[tuple[str, str], Any] = {}  # (session, endpoint): revoking.Revoking
        self.jti_owner: dict[str, tuple[str, str]] = {}  # jtis of endpoints present now
        self.join_limiter = PerKeyLimiter(self.limits.join_rate, self.limits.join_burst)
        self.relay_frames = 0
        self.relay_bytes = 0
        self.closing = False
        _, self.revoked_rowid = revocations.revoked_since(0)
        self.connections: set[web.WebSocketResponse] = set()
        self.guard: ConnectionGuard | None = None  # per-IP cap before the upgrade (listen.py)
        metrics.attach(self.snapshot)

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
            "unjoined": self.guard.total() if self.guard is not None else 0,
            "audit_head_seq": max(self.audit.head_seq, 0),
        }

    async def send_now(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        """Send now, bypassing the queue; a client that does not read cannot hold us."""
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.send_str(dumps(msg)), CLOSE_TIMEOUT)

    async def close_ws(self, ws: web.WebSocketResponse, code: int, err: str, message: str) -> None:
        self.metrics.closes.labels(str(code)).inc()
        await self.send_now(ws, {"type": "error", "code": err, "message": message})
        await shut(ws, code, err.encode()[:120])

    def _bad(self, ws_errors: list[int], err: str) -> None:
        self.metrics.errors.labels(err).inc()
        ws_errors[0] += 1
        if ws_errors[0] > self.limits.max_errors:
            self.metrics.limit_violations.labels("errors").inc()
            raise Closing(cc.PROTOCOL, "too-many-errors", "too many bad messages")

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
