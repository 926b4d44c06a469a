"""Joining, reconnect takeover, the waiting room and leaving: the session registry."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.endpoint import Closing, Endpoint, Session, dumps
from signaling.relay import Relay
from signaling.schema import SchemaError, validate
from signaling.tokens import Grant, TokenError, mint


class Sessions(Relay):
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
            "jti": grant.root_jti,
        }
        if grant.endpoint is not None and grant.endpoint != eid:
            self.reject("token-endpoint", ip, **fields)
            raise Closing(
                cc.UNAUTHORIZED, "token-endpoint", "resume token belongs to another endpoint"
            )
        if data.get("session", grant.session) != grant.session:
            self.reject("wrong-session", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "wrong-session", "token is for another session")
        owner = self._owner(grant.root_jti)
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
        if owner is None:
            self._bind(grant, eid)
        if session is None:
            session = self.sessions[grant.session] = Session(grant.session)
            self.audit.append("session-start", session=grant.session)
        ep = Endpoint(session, grant, eid, ip)
        ep.ws = ws
        session.endpoints[eid] = ep
        session.by_bytes[ep.id_bytes] = ep
        self.jti_owner[grant.root_jti] = (grant.session, eid)
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

    def _owner(self, jti: str) -> tuple[str, str] | None:
        return self.jti_owner.get(jti) or self.bindings.owner(jti)

    def _bind(self, grant: Grant, eid: str) -> None:
        # the check above saw no other owner; this process is the only writer (the data dir
        # is locked), so the insert cannot lose a race
        self.bindings.bind(grant.root_jti, grant.session, eid, grant.exp)

    def _joined(self, ep: Endpoint, others: list[Endpoint]) -> dict[str, Any]:
        return {
            "type": "joined",
            "session": ep.session.id,
            "role": ep.role,
            "endpoint_id": ep.id,
            "waiting": not ep.admitted,
            "peers": [o.info() for o in others],
            "resume_token": self.resume_token(ep),
        }

    def resume_token(self, ep: Endpoint) -> str:
        v, cfg = self.verifier, self.config
        token, _ = mint(
            v.key,
            session=ep.session.id,
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
            self.jti_owner.pop(ep.jti, None)
            ep.jti = grant.root_jti
            self.jti_owner[ep.jti] = (ep.session.id, ep.id)
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
            jti=ep.jti,
            ip=ip,
        )
        logs.event("reconnect", session=ep.session.id, endpoint_id=ep.id, role=ep.role)
        others = ep.session.others(ep)
        ep.queue.appendleft((None, dumps(self._joined(ep, others))))
        ep.wake.set()
        for o in others:
            if ep.admitted or o.role == "clinician":
                self.post(o, {"type": "peer-reconnected", "endpoint_id": ep.id})
        self.rejoined(ep)
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def rejoined(self, ep: Endpoint) -> None:
        """ep is back on a new connection (revoking.py tells it what it missed)."""

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
        # relaying ends both ways: ep's own pairs and every pair towards it
        for dst, counts in ep.relay_pairs.items():
            self._relay_stop(s.id, ep.id, dst, counts)
        ep.relay_pairs.clear()
        for o in s.endpoints.values():
            if ep.id in o.relay_pairs:
                self._relay_stop(s.id, o.id, ep.id, o.relay_pairs.pop(ep.id))
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

    def _relay_stop(self, session: str, src: str, dst: str, counts: list[int]) -> None:
        frames, nbytes = counts
        self.audit.append(
            "relay-stop", session=session, src=src, dst=dst, frames=frames, bytes=nbytes
        )

    def stop_relays(self) -> None:
        """At shutdown: a relay-stop entry for every pair still relaying."""
        for s in self.sessions.values():
            for e in s.endpoints.values():
                for dst, counts in e.relay_pairs.items():
                    self._relay_stop(s.id, e.id, dst, counts)
                e.relay_pairs.clear()

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
