"""Wards: a named group of bed sessions watched by central stations (docs/wards.md).

Each bed stays its own session with its own end-to-end keys. A station endpoint joins the
pseudo-session "ward.W" with a station token; this part tells it the ward's beds and, per
bed, a clinician join token for that bed's session minted for the station's endpoint
(jti and root = the station token's jti, so revoking the station token revokes, and the
sweep closes, every bed endpoint of that station). The station then joins each bed as an
ordinary clinician.

`Wards` serves one server from an in-memory registry (state/wards.py). `ClusterWards`
(--redis) keeps the registry in Redis (state/wards_redis.py), shared by every server: a bed
change is posted to the ward's stations held here and sent over the bus to each server
holding another of them (cluster.py, op "ward-bed").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Config
from signaling.endpoint import Closing, Endpoint
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.replies import Replies
from signaling.state.store import Bus, SessionStore, StoreUnavailable
from signaling.state.wards import ENDED, LINK_LOST, LIVE, WAITING, Bed, MemoryWardRegistry
from signaling.tokens import WARD_PREFIX, Grant, Verifier, mint, station_session

if TYPE_CHECKING:  # redis-py is imported only by a cluster
    from signaling.state.wards_redis import RedisWardRegistry

__all__ = ["ENDED", "LINK_LOST", "LIVE", "WAITING", "Bed", "ClusterWards", "Wards"]


class Wards:
    """The joins.py hooks of wards, for one server: its registry is in memory."""

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
    ) -> None:
        self.config = config
        self.store = store
        self.local = local
        self.verifier = verifier
        self.audit = audit
        self.metrics = metrics
        self.replies = replies
        self.relay = relay
        self.registry = MemoryWardRegistry()
        # (session, endpoint id) of a bed's patient -> its ward: its resume tokens carry the
        # ward claim (from its first `joined` on), so it is a bed again after a server restart
        self.patients: dict[tuple[str, str], str] = {}

    # ---- joins.py hooks ----
    def owner(
        self,
        grant: Grant,
        eid: str,
        owner: tuple[str, str] | None,
        bound: tuple[str, str] | None,
    ) -> tuple[str, str] | None:
        """Who holds grant's token line, for the token-in-use check, from the store's
        `owner` and `bound` of its root jti. A station token is bound to the station's
        endpoint in ward.W; a bed token the server minted for that station (same root,
        another session) belongs to the same endpoint id. The store's `owner` alone cannot
        say this: the station and its bed endpoints share one jti."""
        if grant.role == "station":
            return bound
        bed = grant.role == "clinician" and grant.root  # a resume or bed token
        if bed and bound is not None and bound[0].startswith(WARD_PREFIX):
            return (grant.session, eid) if bound[1] == eid else bound
        return owner or bound

    def ward_for(self, ep: Endpoint) -> str | None:
        """The ward claim of ep's resume tokens (None: no claim, or derived from the session)."""
        if ep.role != "patient":
            return None
        return self.patients.get((ep.session, ep.id))

    def check(self, grant: Grant, ip: str, fields: dict[str, Any]) -> None:
        """Before a new endpoint is added: ward limits and a bed session in one ward only."""
        lim = self.config.limits
        if grant.role == "station":
            stations = len(self.local.in_session(grant.session))
            if stations >= lim.max_stations_per_ward:
                raise self._refuse("ward-stations-full", grant.ward, stations, ip, fields)
            return
        if grant.role != "patient":
            return
        other = self.registry.ward_of(grant.session)
        if other is not None and other != grant.ward:
            raise self._refuse("bed-other-ward", grant.ward, 0, ip, fields)
        if grant.ward and other is None:
            used = self.registry.occupied(grant.ward)
            if used >= lim.max_beds_per_ward:
                raise self._refuse("ward-beds-full", grant.ward, used, ip, fields)
        if grant.ward:
            self.patients[(grant.session, str(fields["endpoint_id"]))] = grant.ward

    def _refuse(self, reason: str, ward: str, n: int, ip: str, fields: dict[str, Any]) -> Closing:
        """Count and audit a refusal; the Closing that tells the endpoint."""
        code = cc.CAPACITY
        if reason == "ward-stations-full":
            self.metrics.limit_violations.labels("stations-per-ward").inc()
            message = f"ward {ward} already has {n} stations"
        elif reason == "ward-beds-full":
            self.metrics.limit_violations.labels("beds-per-ward").inc()
            message = f"ward {ward} already has {n} beds"
        elif ward:
            code, message = cc.FORBIDDEN, f"session {fields['session']} is a bed of another ward"
        else:
            code = cc.FORBIDDEN
            message = f"session {fields['session']} is a bed of a ward: use its ward's patient URL"
        self.replies.reject(reason, ip, **fields)
        return Closing(code, reason, message)

    def joined(self, ep: Endpoint, grant: Grant) -> None:
        """A new endpoint joined (its `joined` is queued)."""
        if ep.role == "station":
            self._station_login(ep, grant)
            self.relay.post(ep, self._snapshot(ep, grant.ward, self.registry.beds(grant.ward)))
        elif ep.role == "patient" and grant.ward:
            if self.registry.ward_of(grant.session) is None:
                self._ward_bed(grant.ward, ep)
            self._set(grant.ward, ep.session, ep.id, LIVE if ep.admitted else WAITING)

    def reconnected(self, ep: Endpoint) -> None:
        if ep.role == "station":
            w = ep.session[len(WARD_PREFIX) :]
            self.relay.post(ep, self._snapshot(ep, w, self.registry.beds(w)))
            return
        ward = self.registry.ward_of(ep.session) if ep.role == "patient" else None
        if ward is not None:
            self._set(ward, ep.session, ep.id, LIVE if ep.admitted else WAITING)

    def disconnected(self, ep: Endpoint) -> None:
        ward = self.registry.ward_of(ep.session) if ep.role == "patient" else None
        if ward is not None:
            self._set(ward, ep.session, ep.id, LINK_LOST)

    def removed(self, ep: Endpoint) -> None:
        self.patients.pop((ep.session, ep.id), None)
        ward = self.registry.ward_of(ep.session) if ep.role == "patient" else None
        if ward is not None:
            self._set(ward, ep.session, ep.id, ENDED)

    def admitted(self, session: str, endpoint_id: str, by: str) -> None:
        ward = self.registry.ward_of(session)
        if ward is None:
            return
        self._ward_admit(ward, session, endpoint_id, by)
        self._set(ward, session, endpoint_id, LIVE)

    # ---- shared by both ----
    def _station_login(self, ep: Endpoint, grant: Grant) -> None:
        self.audit.append("station-login", ward=grant.ward, endpoint_id=ep.id, jti=ep.jti, ip=ep.ip)

    def _ward_bed(self, ward: str, ep: Endpoint) -> None:
        self.audit.append("ward-bed", ward=ward, session=ep.session, endpoint_id=ep.id)

    def _ward_admit(self, ward: str, session: str, endpoint_id: str, by: str) -> None:
        self.audit.append("ward-admit", ward=ward, session=session, endpoint_id=endpoint_id, by=by)

    def _set(self, ward: str, session: str, patient: str, state: str) -> None:
        keep = 2 * self.config.limits.max_beds_per_ward
        bed = self.registry.set(ward, session, patient, state, keep)
        if bed is None:
            return
        for st in self.local.in_session(station_session(ward)):
            if st.ws is not None or st.disconnected_at is not None:
                self.relay.post(st, self._bed_msg(st, ward, bed))

    def _snapshot(self, station: Endpoint, ward: str, beds: list[Bed]) -> dict[str, Any]:
        return {"type": "ward", "ward": ward, "beds": [self._bed(station, ward, b) for b in beds]}

    def _bed_msg(self, station: Endpoint, ward: str, bed: Bed) -> dict[str, Any]:
        return {"type": "bed", "ward": ward, **self._bed(station, ward, bed)}

    def _bed(self, station: Endpoint, ward: str, bed: Bed) -> dict[str, Any]:
        return {
            "session": bed.session,
            "state": bed.state,
            "patient": bed.patient,
            "token": self.bed_token(station, ward, bed.session),
        }

    def bed_token(self, station: Endpoint, ward: str, session: str) -> str:
        """A clinician join token for one bed, for the station's endpoint only (`eid`), of the
        station's token line (`jti` and `root`): the bed node resumes with it across restarts
        and a revocation of the station token reaches it."""
        v, cfg = self.verifier, self.config
        token, _ = mint(
            v.key,
            session=session,
            role="clinician",
            ttl=min(cfg.resume_ttl, cfg.max_token_ttl),
            issuer=v.issuer,
            audience=v.audience,
            jti=station.jti,
            root=station.jti,
            endpoint=station.id,
            ward=ward,
        )
        return token


class ClusterWards(Wards):
    """The same hooks with the registry in Redis, shared by the servers of a cluster.

    The hooks are synchronous and the registry answers over the network, so each hook queues
    a job; the jobs of one server run one after another, in the order of the hooks. The
    checks (bed limit, a bed session in one ward only, station limit) therefore run just
    after the endpoint was added: a refused endpoint gets its `joined`, then the same
    `error` and close code as on a single server, and is removed."""

    def __init__(
        self,
        config: Config,
        *,
        registry: RedisWardRegistry,
        bus: Bus,
        remove: Callable[[Endpoint, str], Awaitable[None]],
        **parts: Any,
    ) -> None:
        super().__init__(config, **parts)
        self.shared = registry
        self.bus = bus
        self.remove = remove  # joins.remove
        self._tail: asyncio.Task[None] | None = None
        # station (session, endpoint id) -> bed session -> version last sent to it; a
        # station is here once its `ward` snapshot was posted
        self.seen: dict[tuple[str, str], dict[str, int]] = {}

    def _later(self, job: Coroutine[Any, Any, None]) -> None:
        prev = self._tail
        self._tail = asyncio.get_running_loop().create_task(self._run(prev, job))

    async def _run(self, prev: asyncio.Task[None] | None, job: Coroutine[Any, Any, None]) -> None:
        if prev is not None and not prev.done():
            await asyncio.wait([prev])
        try:
            await job
        except StoreUnavailable as e:
            # the station misses this change until its next snapshot (a reconnect)
            self.metrics.errors.labels("ward-store-unavailable").inc()
            logs.event("ward-store-unavailable", error=str(e)[:200])
        except Exception:
            logs.log.exception("ward-error")

    # ---- joins.py hooks ----
    def owner(
        self,
        grant: Grant,
        eid: str,
        owner: tuple[str, str] | None,
        bound: tuple[str, str] | None,
    ) -> tuple[str, str] | None:
        if grant.role == "patient" and grant.ward:
            # also when it resumes here from another server: its resume tokens keep the claim
            self.patients[(grant.session, eid)] = grant.ward
        return super().owner(grant, eid, owner, bound)

    def check(self, grant: Grant, ip: str, fields: dict[str, Any]) -> None:
        pass  # in the jobs queued by `joined`: they need the shared registry

    def joined(self, ep: Endpoint, grant: Grant) -> None:
        if ep.role == "station":
            self._later(self._station_joined(ep, grant))
        elif ep.role == "patient":
            self._later(self._bed_joined(ep, grant.ward))

    def reconnected(self, ep: Endpoint) -> None:
        if ep.role == "station":
            self._later(self._send_snapshot(ep))
        elif ep.role == "patient" and (ward := self.patients.get((ep.session, ep.id))):
            self._later(self._bed_back(ep, ward))

    def disconnected(self, ep: Endpoint) -> None:
        if ep.role == "patient" and (ward := self.patients.get((ep.session, ep.id))):
            self._later(self._update(ward, ep.session, ep.id, LINK_LOST))

    def removed(self, ep: Endpoint) -> None:
        if ep.role == "station":
            self.seen.pop((ep.session, ep.id), None)
        ward = self.patients.pop((ep.session, ep.id), None)
        if ep.role == "patient" and ward:
            self._later(self._update(ward, ep.session, ep.id, ENDED))

    def admitted(self, session: str, endpoint_id: str, by: str) -> None:
        self._later(self._admitted(session, endpoint_id, by))

    def server_lost(self, held: list[tuple[str, str]], server: str, state: str) -> None:
        """The reaper (reaper.py): `server` died holding `held` (session, endpoint pairs).
        Its beds still there become link-lost; those it removed from the store, ended (as
        `disconnected` and `removed` would have done on that server)."""
        self._later(self._lost(held, server, state))

    def reregister(self) -> None:
        """Redis is back (maybe restarted empty): put back the beds of the patients held
        here, then send each station held here a fresh snapshot (the ward versions restart
        with an empty Redis, so what a station was sent before says nothing now)."""
        self._later(self._reregister())

    def on_bus(self, msg: dict[str, Any]) -> None:
        """A bed of a ward whose stations this server holds changed on another server."""
        ward, bed = str(msg["ward"]), Bed.from_wire(msg["bed"])
        self._later(self._post_local(ward, bed))

    # ---- the jobs ----
    async def _station_joined(self, ep: Endpoint, grant: Grant) -> None:
        # the store added stations in join order: the first max_stations_per_ward stay
        members = await self.store.members(ep.session)
        stations = [m.endpoint_id for m in members if m.role == "station"]
        if ep.gone or ep.id not in stations:
            return
        n = stations.index(ep.id)
        if n >= self.config.limits.max_stations_per_ward:
            await self._kick(ep, self._refuse("ward-stations-full", grant.ward, n, ep.ip, _f(ep)))
            return
        self._station_login(ep, grant)
        await self._send_snapshot(ep)

    async def _send_snapshot(self, ep: Endpoint) -> None:
        ward = ep.session[len(WARD_PREFIX) :]
        beds = await self.shared.beds(ward)
        if ep.gone:
            return
        self.seen[(ep.session, ep.id)] = {b.session: b.version for b in beds}
        self.relay.post(ep, self._snapshot(ep, ward, beds))

    async def _bed_joined(self, ep: Endpoint, ward: str) -> None:
        state = LIVE if ep.admitted else WAITING
        lim = self.config.limits
        status, bed = await self.shared.claim(ward, ep.session, ep.id, state, lim.max_beds_per_ward)
        if status in ("bed-other-ward", "ward-beds-full"):
            if not ep.gone:
                used = lim.max_beds_per_ward
                await self._kick(ep, self._refuse(status, ward, used, ep.ip, _f(ep)))
            return
        if status == "new":
            self._ward_bed(ward, ep)
        if bed is not None and status != "same":
            await self._changed(ward, bed)

    async def _bed_back(self, ep: Endpoint, ward: str) -> None:
        # a claim: it puts the bed back if Redis lost it (restarted empty)
        state = LIVE if ep.admitted else WAITING
        lim = self.config.limits
        status, bed = await self.shared.claim(ward, ep.session, ep.id, state, lim.max_beds_per_ward)
        if bed is not None and status in ("new", "ok"):
            await self._changed(ward, bed)

    async def _lost(self, held: list[tuple[str, str]], server: str, state: str) -> None:
        for i in range(0, len(held), 500):  # one script per 500: Redis stays responsive
            for ward, bed in await self.shared.lost(held[i : i + 500], server, state):
                await self._changed(ward, bed)

    async def _reregister(self) -> None:
        lim = self.config.limits
        for ep in self.local.all():
            ward = self.patients.get((ep.session, ep.id))
            if ep.role != "patient" or ep.gone or ward is None:
                continue
            state = LINK_LOST if ep.ws is None else LIVE if ep.admitted else WAITING
            status, bed = await self.shared.claim(
                ward, ep.session, ep.id, state, lim.max_beds_per_ward
            )
            if bed is not None and status in ("new", "ok"):
                await self._changed(ward, bed)
        for st in self.local.all():
            if st.role == "station" and not st.gone:
                await self._send_snapshot(st)

    async def _update(self, ward: str, session: str, patient: str, state: str) -> None:
        bed = await self.shared.set(ward, session, patient, state, same=True)
        if bed is not None:
            await self._changed(ward, bed)

    async def _admitted(self, session: str, endpoint_id: str, by: str) -> None:
        ward = await self.shared.ward_of(session)
        if ward is None:
            return
        self._ward_admit(ward, session, endpoint_id, by)
        bed = await self.shared.set(ward, session, endpoint_id, LIVE, same=False)
        if bed is not None:
            await self._changed(ward, bed)

    async def _changed(self, ward: str, bed: Bed) -> None:
        """Post the change to the ward's stations held here, send it to the servers holding
        the others."""
        await self._post_local(ward, bed)
        me = self.bus.server_id
        servers = {m.server for m in await self.store.members(station_session(ward))}
        msg = {"op": "ward-bed", "ward": ward, "bed": bed.wire()}
        for server in sorted(servers - {"", me}):
            await self.bus.send(server, msg)

    async def _post_local(self, ward: str, bed: Bed) -> None:
        for st in self.local.in_session(station_session(ward)):
            seen = self.seen.get((st.session, st.id))
            if seen is None or seen.get(bed.session, -1) >= bed.version:
                continue  # no snapshot yet (it will have the bed), or newer news sent
            if st.ws is not None or st.disconnected_at is not None:
                seen[bed.session] = bed.version
                self.relay.post(st, self._bed_msg(st, ward, bed))

    async def _kick(self, ep: Endpoint, why: Closing) -> None:
        ws = ep.ws
        await self.remove(ep, why.err)
        if ws is not None:
            with contextlib.suppress(Exception):
                await self.replies.close_ws(ws, why.code, why.err, why.message)


def _f(ep: Endpoint) -> dict[str, Any]:
    """The fields of a rejected join (as joins.py audits them)."""
    return {"session": ep.session, "endpoint_id": ep.id, "role": ep.role, "jti": ep.jti}
