"""Wards: a named group of bed sessions watched by central stations (docs/wards.md).

Each bed stays its own session with its own end-to-end keys. A station endpoint joins the
pseudo-session "ward.W" with a station token; this registry tells it the ward's beds and,
per bed, a clinician join token for that bed's session minted for the station's endpoint
(jti and root = the station token's jti, so revoking the station token revokes, and the
sweep closes, every bed endpoint of that station). The station then joins each bed as an
ordinary clinician. The registry is in memory, per server (with --redis: per server too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from signaling import closecodes as cc
from signaling.audit import AuditLog
from signaling.config import Config
from signaling.endpoint import Closing, Endpoint
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.replies import Replies
from signaling.state.store import SessionStore
from signaling.tokens import WARD_PREFIX, Grant, Verifier, mint, station_session

WAITING, LIVE, LINK_LOST, ENDED = "waiting", "live", "link-lost", "ended"


@dataclass
class Bed:
    session: str
    state: str
    patient: str  # the patient's endpoint id
    since: float  # time.time() of the last state change


class Wards:
    """Owns the beds of every ward (in join order) and which ward each bed session is in."""

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
        self.beds: dict[str, dict[str, Bed]] = {}  # ward -> bed session -> bed
        self.ward_of: dict[str, str] = {}  # bed session -> ward
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
            stations = self.local.in_session(grant.session)
            if len(stations) >= lim.max_stations_per_ward:
                self._refuse(
                    "ward-stations-full",
                    "stations-per-ward",
                    f"ward {grant.ward} already has {len(stations)} stations",
                    ip,
                    fields,
                )
            return
        if grant.role != "patient":
            return
        other = self.ward_of.get(grant.session)
        if grant.ward and other is not None and other != grant.ward:
            self._refuse(
                "bed-other-ward",
                None,
                f"session {grant.session} is a bed of another ward",
                ip,
                fields,
                code=cc.FORBIDDEN,
            )
        if not grant.ward and other is not None:
            self._refuse(
                "bed-other-ward",
                None,
                f"session {grant.session} is a bed of a ward: use its ward's patient URL",
                ip,
                fields,
                code=cc.FORBIDDEN,
            )
        if grant.ward and other is None:
            live = [b for b in self.beds.get(grant.ward, {}).values() if b.state != ENDED]
            if len(live) >= lim.max_beds_per_ward:
                self._refuse(
                    "ward-beds-full",
                    "beds-per-ward",
                    f"ward {grant.ward} already has {len(live)} beds",
                    ip,
                    fields,
                )
        if grant.ward:
            self.patients[(grant.session, str(fields["endpoint_id"]))] = grant.ward

    def _refuse(
        self,
        reason: str,
        limit: str | None,
        message: str,
        ip: str,
        fields: dict[str, Any],
        code: int = cc.CAPACITY,
    ) -> None:
        if limit is not None:
            self.metrics.limit_violations.labels(limit).inc()
        self.replies.reject(reason, ip, **fields)
        raise Closing(code, reason, message)

    def joined(self, ep: Endpoint, grant: Grant) -> None:
        """A new endpoint joined (its `joined` is queued)."""
        if ep.role == "station":
            self.audit.append(
                "station-login",
                ward=grant.ward,
                endpoint_id=ep.id,
                jti=ep.jti,
                ip=ep.ip,
            )
            self.relay.post(ep, self._snapshot(ep, grant.ward))
        elif ep.role == "patient" and grant.ward:
            if grant.session not in self.ward_of:
                self.audit.append(
                    "ward-bed", ward=grant.ward, session=ep.session, endpoint_id=ep.id
                )
            self.ward_of[grant.session] = grant.ward
            self._set(grant.ward, ep.session, ep.id, LIVE if ep.admitted else WAITING)

    def reconnected(self, ep: Endpoint) -> None:
        if ep.role == "station":
            self.relay.post(ep, self._snapshot(ep, ep.session[len(WARD_PREFIX) :]))
        elif ep.role == "patient" and ep.session in self.ward_of:
            self._set(self.ward_of[ep.session], ep.session, ep.id, LIVE if ep.admitted else WAITING)

    def disconnected(self, ep: Endpoint) -> None:
        if ep.role == "patient" and ep.session in self.ward_of:
            self._set(self.ward_of[ep.session], ep.session, ep.id, LINK_LOST)

    def removed(self, ep: Endpoint) -> None:
        self.patients.pop((ep.session, ep.id), None)
        if ep.role == "patient" and ep.session in self.ward_of:
            self._set(self.ward_of[ep.session], ep.session, ep.id, ENDED)

    def admitted(self, session: str, endpoint_id: str, by: str) -> None:
        ward = self.ward_of.get(session)
        if ward is None:
            return
        self.audit.append("ward-admit", ward=ward, session=session, endpoint_id=endpoint_id, by=by)
        self._set(ward, session, endpoint_id, LIVE)

    # ---- the registry ----
    def _set(self, ward: str, session: str, patient: str, state: str) -> None:
        beds = self.beds.setdefault(ward, {})
        bed = beds.get(session)
        if bed is not None and bed.state == state and bed.patient == patient:
            return
        if bed is None:
            bed = beds[session] = Bed(session, state, patient, time.time())
            self._prune(ward)
        else:
            bed.state, bed.patient, bed.since = state, patient, time.time()
        for st in self.local.in_session(station_session(ward)):
            if st.ws is not None or st.disconnected_at is not None:
                self.relay.post(st, {"type": "bed", "ward": ward, **self._bed(st, ward, bed)})

    def _prune(self, ward: str) -> None:
        """Ended beds are kept for the stations to show, but not without bound."""
        beds = self.beds[ward]
        ended = [b for b in beds.values() if b.state == ENDED]
        while len(beds) > 2 * self.config.limits.max_beds_per_ward and ended:
            gone = ended.pop(0)
            del beds[gone.session]
            self.ward_of.pop(gone.session, None)

    def _snapshot(self, station: Endpoint, ward: str) -> dict[str, Any]:
        beds = self.beds.get(ward, {}).values()
        return {"type": "ward", "ward": ward, "beds": [self._bed(station, ward, b) for b in beds]}

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
