"""Signaling messages from joined endpoints: role checks, ping, audit, admit, forwarding."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from signaling import closecodes as cc
from signaling.endpoint import Endpoint, shut
from signaling.revoking import Revocations
from signaling.schema import SchemaError, validate

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


class Messages(Revocations):
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
        if kind == "revocation-done":
            if not self.revocation_done(ep, data["endpoint_id"]):
                await self._error(
                    ws, "not-revoked", f"no revocation of {data['endpoint_id']!r} awaits you"
                )
                self._bad(errors, "not-revoked")
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
