"""Joining, reconnect takeover, the waiting room and leaving."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.bindings import BindingStore
from signaling.config import Config
from signaling.endpoint import Closing, Endpoint, dumps
from signaling.limits import PerKeyLimiter
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.replies import Replies
from signaling.revoking import Revocations
from signaling.schema import SchemaError, validate
from signaling.state.store import Member, Refused, SessionStore
from signaling.tokens import Grant, TokenError, Verifier, mint

# limit_violations label of each store refusal that is a capacity limit
_LIMIT = {Refused.SERVER_FULL: "sessions", Refused.SESSION_FULL: "endpoints-per-session"}
_CLOSE = {
    Refused.SERVER_FULL: (cc.CAPACITY, "too many sessions on this server"),
    Refused.SESSION_FULL: (cc.CAPACITY, "too many endpoints in this session"),
    Refused.PATIENT_PRESENT: (cc.FORBIDDEN, "the session already has a patient"),
}


class Joins:
    """Owns the per-IP join limiter; writes the session store and the local endpoints."""

    def __init__(
        self,
        config: Config,
        *,
        store: SessionStore,
        local: LocalEndpoints,
        verifier: Verifier,
        bindings: BindingStore,
        audit: AuditLog,
        metrics: Metrics,
        replies: Replies,
        relay: Relay,
        revocations: Revocations,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.store = store
        self.local = local
        self.verifier = verifier
        self.bindings = bindings  # join token -> endpoint, on disk (survives leave/restart)
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.relay = relay
        self.revocations = revocations
        self.limiter = PerKeyLimiter(self.limits.join_rate, self.limits.join_burst)

    async def await_join(self, ws: web.WebSocketResponse, ip: str) -> Endpoint | None:
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
                self.replies.ws_error(msg.data)
                return None
            if msg.type != WSMsgType.TEXT:
                await self.replies.error(ws, "not-joined", "send join before relay frames")
                self.replies.bad(errors, "not-joined")
                continue
            try:
                data = validate(json.loads(msg.data))
            except (ValueError, SchemaError) as e:
                await self.replies.error(ws, "bad-message", getattr(e, "message", "invalid JSON"))
                self.replies.bad(errors, "bad-message")
                continue
            if data["type"] != "join":
                await self.replies.error(ws, "not-joined", f"{data['type']} before join")
                self.replies.bad(errors, "not-joined")
                continue
            return await self._join(ws, data, ip)

    async def _join(self, ws: web.WebSocketResponse, data: dict[str, Any], ip: str) -> Endpoint:
        t0 = time.perf_counter()
        eid = data["endpoint_id"]
        now = time.monotonic()
        reject = self.replies.reject
        if not self.limiter.take(ip, now):
            self.metrics.limit_violations.labels("join-rate").inc()
            reject("join-rate", ip)
            raise Closing(
                cc.RATE_LIMITED, "too-many-joins", "too many join attempts from this address"
            )
        try:
            grant = self.verifier.verify(data["token"])
        except TokenError as e:
            reject(f"token-{e.reason}", ip, endpoint_id=eid)
            raise Closing(cc.UNAUTHORIZED, f"token-{e.reason}", str(e)) from None
        fields = {
            "session": grant.session,
            "endpoint_id": eid,
            "role": grant.role,
            "jti": grant.root_jti,
        }
        if grant.endpoint is not None and grant.endpoint != eid:
            reject("token-endpoint", ip, **fields)
            raise Closing(
                cc.UNAUTHORIZED, "token-endpoint", "resume token belongs to another endpoint"
            )
        if data.get("session", grant.session) != grant.session:
            reject("wrong-session", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "wrong-session", "token is for another session")
        owner = self._owner(grant.root_jti)
        if owner is not None and owner != (grant.session, eid):
            reject("token-in-use", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "token-in-use", "token already used by another endpoint")
        present = self.store.member(grant.session, eid)
        if present is not None:
            if present.role != grant.role:
                reject("role-mismatch", ip, **fields)
                raise Closing(
                    cc.FORBIDDEN, "role-mismatch", "endpoint_id is in use with another role"
                )
            old = self.local.get(grant.session, eid)
            if old is None:  # held by another server: only a shared store can say so
                raise RuntimeError(f"endpoint {eid!r} is in the store but not held here")
            return await self._takeover(ws, old, grant, ip, t0)
        member = Member(grant.session, eid, grant.role, grant.root_jti, grant.role != "patient")
        refused, started = self.store.add(
            member,
            max_sessions=self.limits.max_sessions,
            max_endpoints=self.limits.max_endpoints_per_session,
        )
        if refused is not None:
            if refused in _LIMIT:
                self.metrics.limit_violations.labels(_LIMIT[refused]).inc()
            reject(refused.value, ip, **fields)
            code, message = _CLOSE[refused]
            raise Closing(code, refused.value, message)
        if owner is None:
            try:
                self._bind(grant, eid)
            except BaseException:
                self.store.remove(grant.session, eid)
                raise
        if started:
            self.audit.append("session-start", session=grant.session)
        ep = Endpoint(member, ip)
        ep.ws = ws
        self.local.add(ep)
        ep.writer = asyncio.get_running_loop().create_task(self.relay.writer(ep))
        self.audit.append("join", ip=ip, waiting=not ep.admitted, **fields)
        self.metrics.joins.labels(grant.role).inc()
        logs.event("join", session=ep.session, endpoint_id=eid, role=grant.role)
        others = self._others(ep)
        post = self.relay.post
        post(ep, self._joined(ep))
        if not ep.admitted:
            for o in others:
                if o.role == "clinician" and o.admitted:
                    post(o, {"type": "peer-waiting", "endpoint_id": eid, "role": ep.role})
        else:
            for o in others:
                if o.admitted:
                    post(o, {"type": "peer-joined", "endpoint_id": eid, "role": ep.role})
                    post(ep, {"type": "peer-joined", "endpoint_id": o.id, "role": o.role})
                elif ep.role == "clinician":
                    post(ep, {"type": "peer-waiting", "endpoint_id": o.id, "role": o.role})
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def _others(self, ep: Endpoint) -> list[Endpoint]:
        return [o for o in self.local.in_session(ep.session) if o is not ep]

    def _owner(self, jti: str) -> tuple[str, str] | None:
        return self.store.owner(jti) or self.bindings.owner(jti)

    def _bind(self, grant: Grant, eid: str) -> None:
        # the check above saw no other owner; this process is the only writer (the data dir
        # is locked), so the insert cannot lose a race
        self.bindings.bind(grant.root_jti, grant.session, eid, grant.exp)

    def _joined(self, ep: Endpoint) -> dict[str, Any]:
        return {
            "type": "joined",
            "session": ep.session,
            "role": ep.role,
            "endpoint_id": ep.id,
            "waiting": not ep.admitted,
            "peers": [m.info() for m in self.store.members(ep.session) if m.endpoint_id != ep.id],
            "resume_token": self.resume_token(ep),
        }

    def resume_token(self, ep: Endpoint) -> str:
        v, cfg = self.verifier, self.config
        token, _ = mint(
            v.key,
            session=ep.session,
            role=ep.role,
            ttl=min(cfg.resume_ttl, cfg.max_token_ttl),
            issuer=v.issuer,
            audience=v.audience,
            root=ep.jti,
            endpoint=ep.id,
        )
        ep.resume_at = time.monotonic()
        return token

    async def _takeover(
        self, ws: web.WebSocketResponse, ep: Endpoint, grant: Grant, ip: str, t0: float
    ) -> Endpoint:
        old_ws = ep.ws
        ep.ws = ws
        ep.disconnected_at = None
        ep.last_activity = time.monotonic()
        if ep.jti != grant.root_jti:
            if self._owner(grant.root_jti) is None:  # checked in _join: free or ep's own
                self._bind(grant, ep.id)
            ep.member = self.store.rebind(ep.session, ep.id, grant.root_jti)
        ep.ip = ip
        # JSON queued for the old connection is stale (the new one gets a fresh "joined");
        # relay frames stay queued and go to the new connection in order.
        ep.queue = deque(item for item in ep.queue if not isinstance(item[1], str))
        if old_ws is not None and not old_ws.closed:
            await self.replies.close_ws(
                old_ws, cc.REPLACED, "replaced", "another connection took over"
            )
        self.audit.append(
            "reconnect",
            session=ep.session,
            endpoint_id=ep.id,
            role=ep.role,
            jti=ep.jti,
            ip=ip,
        )
        logs.event("reconnect", session=ep.session, endpoint_id=ep.id, role=ep.role)
        ep.queue.appendleft((None, dumps(self._joined(ep))))
        ep.wake.set()
        for o in self._others(ep):
            if ep.admitted or o.role == "clinician":
                self.relay.post(o, {"type": "peer-reconnected", "endpoint_id": ep.id})
        self.revocations.rejoined(ep)
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def disconnected(self, ep: Endpoint) -> None:
        ep.ws = None
        ep.disconnected_at = time.monotonic()
        logs.event("disconnected", session=ep.session, endpoint_id=ep.id)

    def remove(self, ep: Endpoint, why: str) -> None:
        if ep.gone:
            return
        ep.gone = True
        sid = ep.session
        ended = self.store.remove(sid, ep.id)
        self.local.discard(ep)
        others = self.local.in_session(sid)
        self.relay.end(ep, others)
        self.audit.append("leave", session=sid, endpoint_id=ep.id, role=ep.role, why=why)
        logs.event("leave", session=sid, endpoint_id=ep.id, role=ep.role, why=why)
        for o in others:
            self.relay.post(o, {"type": "peer-left", "endpoint_id": ep.id})
        ep.space.set()  # release senders held on this queue; they find the peer gone
        if ep.writer is not None:
            ep.writer.cancel()
        ep.queue.clear()
        ep.qframes = ep.qbytes = 0
        if ended:
            self.audit.append("session-end", session=sid)

    async def admit(
        self, ws: web.WebSocketResponse, ep: Endpoint, target: str, errors: list[int]
    ) -> None:
        member = self.store.admit(ep.session, target)
        p = self.local.get(ep.session, target)
        if member is None or p is None:
            await self.replies.error(ws, "not-waiting", f"{target!r} is not in the waiting room")
            self.replies.bad(errors, "not-waiting")
            return
        p.member = member
        self.audit.append("admit", session=ep.session, endpoint_id=p.id, by=ep.id)
        logs.event("admit", session=ep.session, endpoint_id=p.id, by=ep.id)
        self.relay.post(p, {"type": "admitted", "by": ep.id})
        for o in self._others(p):
            if o.admitted:
                self.relay.post(o, {"type": "peer-joined", "endpoint_id": p.id, "role": p.role})
                self.relay.post(p, {"type": "peer-joined", "endpoint_id": o.id, "role": o.role})
