"""Joining, reconnect takeover, the waiting room and leaving."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, NoReturn

from aiohttp import WSMsgType, web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Config
from signaling.endpoint import Closing, Endpoint, dumps, shut
from signaling.limits import PerKeyLimiter
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.replies import Replies, send_now
from signaling.revoking import Revocations
from signaling.schema import SchemaError, decode
from signaling.state.store import Bus, Member, Refused, SessionStore, StoreUnavailable
from signaling.tokens import Grant, TokenError, Verifier, mint
from signaling.wards import Wards

# limit_violations label of each store refusal that is a capacity limit
_LIMIT = {Refused.SERVER_FULL: "sessions", Refused.SESSION_FULL: "endpoints-per-session"}
_CLOSE = {
    Refused.SERVER_FULL: (cc.CAPACITY, "too many sessions on this server"),
    Refused.SESSION_FULL: (cc.CAPACITY, "too many endpoints in this session"),
    Refused.PATIENT_PRESENT: (cc.FORBIDDEN, "the session already has a patient"),
    Refused.TOKEN_IN_USE: (cc.UNAUTHORIZED, "token already used by another endpoint"),
}


class Joins:
    """Owns the per-IP join limiter; writes the session store and the local endpoints.

    In a cluster (`bus` given) a session's endpoints may be held by other servers: what they
    must be told goes to their server over the bus, and an endpoint held elsewhere that
    joins here is taken over from that server (it resumed here)."""

    def __init__(
        self,
        config: Config,
        *,
        store: SessionStore,
        local: LocalEndpoints,
        verifier: Verifier,
        audit: AuditLog,
        metrics: Metrics,
        replies: Replies,
        relay: Relay,
        revocations: Revocations,
        bus: Bus | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.store = store
        self.local = local
        self.verifier = verifier
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.relay = relay
        self.revocations = revocations
        self.limiter = PerKeyLimiter(self.limits.join_rate, self.limits.join_burst)
        self.bus = bus
        self.server_id = "" if bus is None else bus.server_id
        self.wards: Wards | None = None  # set by the hub (wards.py hooks)

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
                data = decode(msg.data)
            except SchemaError as e:
                await self.replies.error(ws, "bad-message", e.message)
                self.replies.bad(errors, "bad-message")
                continue
            if data["type"] != "join":
                await self.replies.error(ws, "not-joined", f"{data['type']} before join")
                self.replies.bad(errors, "not-joined")
                continue
            try:
                return await self._join(ws, data, ip)
            except StoreUnavailable as e:
                # not an error reply: a client refused before its first join gives up on
                # an error, but retries on `reconnect` (through the load balancer, which
                # has taken this server out by /healthz)
                self.replies.reject("store-unavailable", ip, endpoint_id=data["endpoint_id"])
                logs.event("store-unavailable", error=str(e)[:200])
                self.metrics.closes.labels(str(cc.SERVICE_RESTART)).inc()
                after = self.config.shutdown_reconnect_ms
                await send_now(
                    ws, {"type": "reconnect", "after_ms": after, "reason": "store-unavailable"}
                )
                await shut(ws, cc.SERVICE_RESTART, b"store-unavailable")
                return None

    async def _join(self, ws: web.WebSocketResponse, data: dict[str, Any], ip: str) -> Endpoint:
        t0 = time.perf_counter()
        eid = data["endpoint_id"]
        now = time.monotonic()
        reject = self.replies.reject
        lim = self.limits
        if not self.limiter.take(ip, now):
            self._too_many(ip)
        try:
            grant = self.verifier.verify(data["token"])
        except TokenError as e:
            reject(f"token-{e.reason}", ip, endpoint_id=eid)
            raise Closing(cc.UNAUTHORIZED, f"token-{e.reason}", str(e)) from None
        # the cluster's join bucket, revocations, the endpoint's record and who holds its
        # join token: one round trip
        pre = await self.store.prejoin(
            ip,
            lim.join_rate,
            lim.join_burst,
            (grant.jti, grant.root_jti),
            grant.session,
            eid,
            grant.root_jti,
        )
        if not pre.allowed:
            self._too_many(ip)
        if pre.revoked:
            reject("token-revoked", ip, endpoint_id=eid)
            raise Closing(cc.UNAUTHORIZED, "token-revoked", "token revoked")
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
        if self.wards is not None:
            owner = self.wards.owner(grant, eid, pre.owner, pre.bound)
        else:
            owner = pre.owner or pre.bound
        if owner is not None and owner != (grant.session, eid):
            reject("token-in-use", ip, **fields)
            raise Closing(cc.UNAUTHORIZED, "token-in-use", "token already used by another endpoint")
        present = pre.present
        if present is not None:
            if present.role != grant.role:
                reject("role-mismatch", ip, **fields)
                raise Closing(
                    cc.FORBIDDEN, "role-mismatch", "endpoint_id is in use with another role"
                )
            old = self.local.get(grant.session, eid)
            if old is not None:
                return await self._takeover(ws, old, grant, ip, t0)
            if self.bus is None:
                raise RuntimeError(f"endpoint {eid!r} is in the store but not held here")
            # held by another server, or by this one before it restarted: take it over
            ep = await self._take_from(ws, present, grant, ip, t0)
            if ep is not None:
                return ep
            # it left in the meantime: a new join
        if self.wards is not None:
            self.wards.check(grant, ip, fields)
        member = Member(
            grant.session,
            eid,
            grant.role,
            grant.root_jti,
            grant.role != "patient",
            self.server_id,
        )
        # add it, bind its join token if nobody holds that, and read the session: one step
        refused, started, members = await self.store.add_join(
            member,
            max_sessions=self.limits.max_sessions,
            max_endpoints=self.limits.max_endpoints_per_session,
            bind_exp=grant.exp if owner is None else None,
        )
        if refused is not None:
            if refused in _LIMIT:
                self.metrics.limit_violations.labels(_LIMIT[refused]).inc()
            reject(refused.value, ip, **fields)
            code, message = _CLOSE[refused]
            raise Closing(code, refused.value, message)
        try:
            if started:
                self.audit.record("session-start", session=grant.session)
            self.audit.record("join", ip=ip, waiting=not member.admitted, **fields)
        except OSError as exc:  # a join the audit log cannot record (disk full) is refused
            await self.store.remove(grant.session, eid, self.server_id)
            raise StoreUnavailable(f"audit log: {exc}") from exc
        ep = Endpoint(member, ip)
        ep.ws = ws
        self.local.add(ep)
        ep.writer = asyncio.get_running_loop().create_task(self.relay.writer(ep))
        self.metrics.joins.labels(grant.role).inc()
        logs.event("join", session=ep.session, endpoint_id=eid, role=grant.role)
        others = [m for m in members if m.endpoint_id != eid]
        post, tell = self.relay.post, self.tell
        post(ep, self._joined(ep, members))
        if not ep.admitted:
            for o in others:
                if o.role == "clinician" and o.admitted:
                    await tell(o, {"type": "peer-waiting", "endpoint_id": eid, "role": ep.role})
        else:
            for o in others:
                if o.admitted:
                    await tell(o, {"type": "peer-joined", "endpoint_id": eid, "role": ep.role})
                    post(ep, {"type": "peer-joined", "endpoint_id": o.endpoint_id, "role": o.role})
                elif ep.role == "clinician":
                    post(ep, {"type": "peer-waiting", "endpoint_id": o.endpoint_id, "role": o.role})
        if self.wards is not None:
            self.wards.joined(ep, grant)
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    def _too_many(self, ip: str) -> NoReturn:
        self.metrics.limit_violations.labels("join-rate").inc()
        self.replies.reject("join-rate", ip)
        raise Closing(cc.RATE_LIMITED, "too-many-joins", "too many join attempts from this address")

    async def tell(self, m: Member, msg: dict[str, Any]) -> None:
        """Queue msg for the endpoint m, on this server or, over the bus, on the one holding it."""
        o = self.local.get(m.session, m.endpoint_id)
        if o is not None:
            self.relay.post(o, msg)
        elif self.bus is not None and m.server not in ("", self.server_id):
            await self.bus.send(
                m.server, {"op": "post", "session": m.session, "to": m.endpoint_id, "msg": msg}
            )

    async def _owner(self, jti: str) -> tuple[str, str] | None:
        return await self.store.owner(jti) or await self.store.bound(jti)

    async def _bind(self, grant: Grant, eid: str) -> tuple[str, str]:
        """Bind the join token to eid for its lifetime; the binding that holds (another one
        if another server bound it between the check in _join and now)."""
        return await self.store.bind(grant.root_jti, grant.session, eid, grant.exp)

    def _joined(self, ep: Endpoint, members: list[Member]) -> dict[str, Any]:
        return {
            "type": "joined",
            "session": ep.session,
            "role": ep.role,
            "endpoint_id": ep.id,
            "waiting": not ep.admitted,
            "peers": [m.info() for m in members if m.endpoint_id != ep.id],
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
            ward=self.wards.ward_for(ep) if self.wards is not None else None,
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
            if await self._owner(grant.root_jti) is None:  # checked in _join: free or ep's own
                await self._bind(grant, ep.id)
            ep.member = await self.store.rebind(ep.session, ep.id, grant.root_jti)
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
        members = await self.store.members(ep.session)
        ep.queue.appendleft((None, dumps(self._joined(ep, members))))
        ep.wake.set()
        await self._reconnected(ep, members)
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    async def _reconnected(self, ep: Endpoint, members: list[Member]) -> None:
        for o in members:
            if o.endpoint_id != ep.id and (ep.admitted or o.role == "clinician"):
                await self.tell(o, {"type": "peer-reconnected", "endpoint_id": ep.id})
        self.revocations.rejoined(ep)
        if self.wards is not None:
            self.wards.reconnected(ep)

    async def _take_from(
        self, ws: web.WebSocketResponse, present: Member, grant: Grant, ip: str, t0: float
    ) -> Endpoint | None:
        """The endpoint is held by another server (it resumed here, its server may be dead):
        claim it, tell that server to let go, and serve it here. None if it left meanwhile."""
        assert self.bus is not None
        member = await self.store.claim(present.session, present.endpoint_id, self.server_id)
        if member is None:
            return None
        if present.server != self.server_id:
            await self.bus.send(
                present.server,
                {"op": "drop", "session": member.session, "to": member.endpoint_id},
            )
        ep = Endpoint(member, ip)
        ep.ws = ws
        self.local.add(ep)
        ep.writer = asyncio.get_running_loop().create_task(self.relay.writer(ep))
        if ep.jti != grant.root_jti:
            if await self._owner(grant.root_jti) is None:
                await self._bind(grant, ep.id)
            ep.member = await self.store.rebind(ep.session, ep.id, grant.root_jti)
        self.audit.append(
            "reconnect",
            session=ep.session,
            endpoint_id=ep.id,
            role=ep.role,
            jti=ep.jti,
            ip=ip,
            from_server=present.server,
        )
        logs.event("reconnect", session=ep.session, endpoint_id=ep.id, role=ep.role)
        members = await self.store.members(ep.session)
        self.relay.post(ep, self._joined(ep, members))
        await self._reconnected(ep, members)
        self.metrics.join_latency.observe(time.perf_counter() - t0)
        return ep

    async def dropped(self, session: str, endpoint_id: str) -> None:
        """Another server took the endpoint over: let go of it here, store untouched."""
        ep = self.local.get(session, endpoint_id)
        if ep is None or ep.gone:
            return
        ep.gone = True
        self.local.discard(ep)
        self.relay.end(ep, self.local.in_session(session))
        self.audit.append("moved", session=session, endpoint_id=endpoint_id, role=ep.role)
        ws, ep.ws = ep.ws, None
        ep.space.set()
        if ep.writer is not None:
            ep.writer.cancel()
        ep.queue.clear()
        ep.qframes = ep.qbytes = 0
        if ws is not None and not ws.closed:
            await self.replies.close_ws(ws, cc.REPLACED, "replaced", "another server took over")

    def disconnected(self, ep: Endpoint) -> None:
        ep.ws = None
        ep.disconnected_at = time.monotonic()
        logs.event("disconnected", session=ep.session, endpoint_id=ep.id)
        if self.wards is not None:
            self.wards.disconnected(ep)

    async def remove(self, ep: Endpoint, why: str) -> None:
        if ep.gone:
            return
        ep.gone = True
        sid = ep.session
        self.local.discard(ep)
        others = self.local.in_session(sid)
        self.relay.end(ep, others)
        ep.space.set()  # release senders held on this queue; they find the peer gone
        if ep.writer is not None:
            ep.writer.cancel()
        ended, remote = False, []
        try:
            ended = await self.store.remove(sid, ep.id, self.server_id)
            if self.bus is not None:
                remote = [
                    m
                    for m in await self.store.members(sid)
                    if not self.local.get(sid, m.endpoint_id)
                ]
        except StoreUnavailable:
            # left in the shared store; re-registration after Redis is back drops it
            self.metrics.errors.labels("store-unavailable").inc()
        self.audit.append("leave", session=sid, endpoint_id=ep.id, role=ep.role, why=why)
        logs.event("leave", session=sid, endpoint_id=ep.id, role=ep.role, why=why)
        for m in remote:
            with contextlib.suppress(StoreUnavailable):
                await self.tell(m, {"type": "peer-left", "endpoint_id": ep.id})
        for o in others:
            self.relay.post(o, {"type": "peer-left", "endpoint_id": ep.id})
        ep.queue.clear()
        ep.qframes = ep.qbytes = 0
        if ended:
            self.audit.append("session-end", session=sid)
        if self.wards is not None:
            self.wards.removed(ep)

    async def admit(
        self, ws: web.WebSocketResponse, ep: Endpoint, target: str, errors: list[int]
    ) -> None:
        member = await self.store.admit(ep.session, target)
        if member is None:
            await self.replies.error(ws, "not-waiting", f"{target!r} is not in the waiting room")
            self.replies.bad(errors, "not-waiting")
            return
        self.audit.append("admit", session=ep.session, endpoint_id=target, by=ep.id)
        logs.event("admit", session=ep.session, endpoint_id=target, by=ep.id)
        if self.wards is not None:
            self.wards.admitted(ep.session, target, ep.id)
        if self.local.get(ep.session, target) is not None:
            await self.admitted(member, ep.id)
        elif self.bus is not None and member.server not in ("", self.server_id):
            await self.bus.send(
                member.server,
                {"op": "admitted", "session": ep.session, "to": target, "by": ep.id},
            )

    async def admitted(self, member: Member, by: str) -> None:
        """On the server holding the admitted endpoint: tell it and its admitted peers."""
        p = self.local.get(member.session, member.endpoint_id)
        if p is None:
            return
        p.member = member
        self.relay.post(p, {"type": "admitted", "by": by})
        for o in await self.store.members(p.session):
            if o.endpoint_id != p.id and o.admitted:
                await self.tell(o, {"type": "peer-joined", "endpoint_id": p.id, "role": p.role})
                self.relay.post(
                    p, {"type": "peer-joined", "endpoint_id": o.endpoint_id, "role": o.role}
                )
