"""Signaling messages from joined endpoints: role checks, ping, audit, admit, forwarding."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from signaling import closecodes as cc
from signaling.audit import AuditLog
from signaling.endpoint import Endpoint, shut
from signaling.joins import Joins
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.replies import Replies
from signaling.revoking import Revocations
from signaling.schema import SchemaError, decode

ALLOWED = {
    "patient": {"offer", "answer", "candidate", "leave", "audit", "ping", "revocation-done"},
    "clinician": {
        "admit",
        "offer",
        "answer",
        "candidate",
        "leave",
        "audit",
        "ping",
        "revocation-done",
    },
    "observer": {"answer", "candidate", "leave", "audit", "ping", "revocation-done"},
}


class Messages:
    """No state of its own: checks each message and hands it to the part that acts on it."""

    def __init__(
        self,
        *,
        local: LocalEndpoints,
        audit: AuditLog,
        metrics: Metrics,
        replies: Replies,
        relay: Relay,
        joins: Joins,
        revocations: Revocations,
    ) -> None:
        self.local = local
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.relay = relay
        self.joins = joins
        self.revocations = revocations

    async def text(
        self, ws: web.WebSocketResponse, ep: Endpoint, raw: str, errors: list[int]
    ) -> bool:
        """One JSON message from ep; True when ep left (the read loop ends)."""
        t0 = time.perf_counter()
        try:
            data = decode(raw)
        except SchemaError as e:
            await self.replies.error(ws, "bad-message", e.message)
            self.replies.bad(errors, "bad-message")
            return False
        kind = data["type"]
        self.metrics.messages.labels(kind).inc()
        if kind == "join":
            await self.replies.error(ws, "already-joined", "this connection already joined")
            self.replies.bad(errors, "already-joined")
            return False
        if kind not in ALLOWED[ep.role]:
            self.audit.append(
                "forbidden", session=ep.session, endpoint_id=ep.id, role=ep.role, action=kind
            )
            self.metrics.rejected_joins.labels("role-action").inc()
            await self.replies.error(ws, "forbidden", f"role {ep.role} may not send {kind}")
            self.replies.bad(errors, "forbidden")
            return False
        if kind == "leave":
            await self.joins.remove(ep, "leave")
            await shut(ws, cc.NORMAL, b"left")
            return True
        if kind == "ping":  # keeps an active user's endpoint from the idle logoff
            pong: dict[str, Any] = {"type": "pong"}
            if "id" in data:
                pong["id"] = data["id"]
            self.relay.post(ep, pong)
            return False
        if kind == "audit":
            self.audit.append(
                data["event"],
                session=ep.session,
                endpoint_id=ep.id,
                role=ep.role,
                alarm_id=data["alarm_id"],
            )
            return False
        if kind == "admit":
            await self.joins.admit(ws, ep, data["endpoint_id"], errors)
            return False
        if kind == "revocation-done":
            target = self.revocations.confirm_to.get((ep.session, data["endpoint_id"]))
            bus = self.joins.bus
            if target is not None and bus is not None:
                # the revoked endpoint was on another server, which awaits this
                await bus.send(
                    target[0],
                    {
                        "op": "revocation-done",
                        "session": ep.session,
                        "by": ep.id,
                        "revoked": data["endpoint_id"],
                    },
                )
            elif not self.revocations.done(ep, data["endpoint_id"]):
                await self.replies.error(
                    ws, "not-revoked", f"no revocation of {data['endpoint_id']!r} awaits you"
                )
                self.replies.bad(errors, "not-revoked")
            return False
        # offer / answer / candidate
        dst = self.local.get(ep.session, data["to"])
        if dst is None and self.joins.bus is not None and data["to"] != ep.id:
            return await self._forward(ws, ep, data, errors, t0)
        if dst is None or dst is ep:
            await self.replies.error(
                ws, "unknown-peer", f"no endpoint {data['to']!r} here", to=data["to"]
            )
            self.replies.bad(errors, "unknown-peer")
            return False
        if not (ep.admitted and dst.admitted):
            await self.replies.error(
                ws, "not-admitted", "both endpoints must be admitted", to=dst.id
            )
            self.replies.bad(errors, "not-admitted")
            return False
        if dst.ws is None:
            await self.replies.error(
                ws, "peer-disconnected", f"{dst.id} is reconnecting", to=dst.id
            )
            return False
        data["from"] = ep.id
        self.relay.post(dst, data)
        self.metrics.signaling_latency.observe(time.perf_counter() - t0)
        return False

    async def _forward(
        self,
        ws: web.WebSocketResponse,
        ep: Endpoint,
        data: dict[str, Any],
        errors: list[int],
        t0: float,
    ) -> bool:
        """A signaling message for an endpoint another server of the cluster holds."""
        m = await self.joins.store.member(ep.session, data["to"])
        if m is None:
            await self.replies.error(
                ws, "unknown-peer", f"no endpoint {data['to']!r} here", to=data["to"]
            )
            self.replies.bad(errors, "unknown-peer")
            return False
        if not (ep.admitted and m.admitted):
            await self.replies.error(
                ws, "not-admitted", "both endpoints must be admitted", to=m.endpoint_id
            )
            self.replies.bad(errors, "not-admitted")
            return False
        data["from"] = ep.id
        await self.joins.tell(m, data)
        self.metrics.signaling_latency.observe(time.perf_counter() - t0)
        return False
