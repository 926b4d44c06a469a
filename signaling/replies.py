"""Replies every part of the hub sends: errors, closes, rejected joins, the bad-message count."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Limits
from signaling.endpoint import CLOSE_TIMEOUT, Closing, dumps, shut
from signaling.metrics import Metrics


async def send_now(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
    """Send now, bypassing the queue; a client that does not read cannot hold us."""
    if not ws.closed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.send_str(dumps(msg)), CLOSE_TIMEOUT)


class Replies:
    def __init__(self, limits: Limits, audit: AuditLog, metrics: Metrics) -> None:
        self.limits = limits
        self.audit = audit
        self.metrics = metrics

    async def close_ws(self, ws: web.WebSocketResponse, code: int, err: str, message: str) -> None:
        self.metrics.closes.labels(str(code)).inc()
        await send_now(ws, {"type": "error", "code": err, "message": message})
        await shut(ws, code, err.encode()[:120])

    async def error(self, ws: web.WebSocketResponse, code: str, message: str, **extra: Any) -> None:
        await send_now(ws, {"type": "error", "code": code, "message": message, **extra})

    def bad(self, ws_errors: list[int], err: str) -> None:
        """Count a bad message of one connection; too many close it."""
        self.metrics.errors.labels(err).inc()
        ws_errors[0] += 1
        if ws_errors[0] > self.limits.max_errors:
            self.metrics.limit_violations.labels("errors").inc()
            raise Closing(cc.PROTOCOL, "too-many-errors", "too many bad messages")

    def ws_error(self, exc: object) -> None:
        if getattr(exc, "code", None) == cc.MESSAGE_TOO_BIG:
            self.metrics.limit_violations.labels("message-size").inc()
            self.metrics.closes.labels(str(cc.MESSAGE_TOO_BIG)).inc()

    def reject(self, reason: str, ip: str, **fields: Any) -> None:
        self.metrics.rejected_joins.labels(reason).inc()
        self.audit.append("reject", reason=reason, ip=ip, **fields)
        logs.event("join-rejected", reason=reason, **fields)
