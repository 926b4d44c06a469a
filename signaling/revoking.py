"""Ending a revoked endpoint's consultation on every path, and auditing when it really ended.

Closing the revoked endpoint's WebSocket ends only what passes through the server. Its
direct (WebRTC) paths with its peers do not: so the server tells each peer that could have
an E2E session with it (`peer-revoked`), each peer closes that session on every path and
answers `revocation-done`, and the audit log records `revoke-complete` with the time from
the revocation to the last confirmation, or `revoke-timeout` naming the peers that never
confirmed (a late confirmation still completes it, marked late).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from signaling.audit import AuditLog
from signaling.endpoint import Endpoint
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.state.store import Member

# which roles can hold an E2E session with which (the patient offers to everyone else)
LINKED = {
    "patient": ("clinician", "observer"),
    "clinician": ("patient",),
    "observer": ("patient",),
}
FORGET_AFTER = 600.0  # a timed-out revocation still takes late confirmations this long


@dataclass
class Revoking:
    session: str
    endpoint_id: str
    jti: str
    started: float  # monotonic
    waiting: set[str]
    confirmed: list[str] = field(default_factory=list)
    timed_out: bool = False


class Revocations:
    """Owns the revocations that wait for their peers' confirmation."""

    def __init__(
        self,
        revoke_timeout: float,
        audit: AuditLog,
        metrics: Metrics,
        relay: Relay,
        local: LocalEndpoints,
    ) -> None:
        self.revoke_timeout = revoke_timeout
        self.audit = audit
        self.metrics = metrics
        self.relay = relay
        self.local = local
        self.pending: dict[tuple[str, str], Revoking] = {}  # (session, revoked endpoint)
        # in a cluster: (session, revoked endpoint) -> the server awaiting confirmations of
        # peers held here, and when it asked (monotonic)
        self.confirm_to: dict[tuple[str, str], tuple[str, float]] = {}

    def start(self, ep: Endpoint, remote: list[Member] | None = None) -> list[Member]:
        """Before ep is removed: tell its peers, so `peer-revoked` precedes `peer-left`.
        `remote`: its admitted peers held by other servers of a cluster; returns those the
        caller must tell (over the bus), already counted as awaited."""
        waiting: set[str] = set()
        tell: list[Member] = []
        for m in remote or []:
            if not m.admitted:
                continue
            tell.append(m)
            if ep.admitted and m.role in LINKED[ep.role]:
                waiting.add(m.endpoint_id)
        for o in self.local.in_session(ep.session):
            if o is ep:
                continue
            if not o.admitted:
                continue
            if o.ws is not None:  # a peer away now is told when it is back (rejoined)
                self.relay.post(o, {"type": "peer-revoked", "endpoint_id": ep.id})
            if ep.admitted and o.role in LINKED[ep.role]:
                waiting.add(o.id)
        r = Revoking(ep.session, ep.id, ep.jti, time.monotonic(), waiting)
        if waiting:
            self.pending[(r.session, r.endpoint_id)] = r
        else:
            self._complete(r)
        return tell

    def rejoined(self, ep: Endpoint) -> None:
        """A peer that was away when an endpoint was revoked still holds its direct paths:
        tell it on its new connection (after its fresh `joined`)."""
        for r in self.pending.values():
            if r.session == ep.session and ep.id in r.waiting:
                self.relay.post(ep, {"type": "peer-revoked", "endpoint_id": r.endpoint_id})

    def done(self, ep: Endpoint, revoked_id: str) -> bool:
        """ep's `revocation-done`: False when no revocation of revoked_id waits for it."""
        return self.done_by(ep.session, ep.id, revoked_id)

    def done_by(self, session: str, peer: str, revoked_id: str) -> bool:
        """The confirmation of `peer` (held here or, in a cluster, by another server)."""
        r = self.pending.get((session, revoked_id))
        if r is None or peer not in r.waiting:
            return False
        r.waiting.discard(peer)
        r.confirmed.append(peer)
        if not r.waiting:
            del self.pending[(r.session, r.endpoint_id)]
            self._complete(r)
        return True

    def check(self, now: float) -> None:
        """From the sweep: a timeout entry for peers that did not confirm in time."""
        for key, (_, t) in list(self.confirm_to.items()):
            if now - t > FORGET_AFTER:
                del self.confirm_to[key]
        for key, r in list(self.pending.items()):
            age = now - r.started
            if r.timed_out:
                if age > FORGET_AFTER:
                    del self.pending[key]
                continue
            if age > self.revoke_timeout:
                r.timed_out = True
                self.metrics.errors.labels("revoke-timeout").inc()
                self.audit.append(
                    "revoke-timeout",
                    session=r.session,
                    endpoint_id=r.endpoint_id,
                    jti=r.jti,
                    after_ms=round(age * 1000),
                    unconfirmed=sorted(r.waiting),
                    confirmed=r.confirmed,
                )

    def _complete(self, r: Revoking) -> None:
        elapsed = time.monotonic() - r.started
        self.audit.append(
            "revoke-complete",
            session=r.session,
            endpoint_id=r.endpoint_id,
            jti=r.jti,
            elapsed_ms=round(elapsed * 1000),
            peers=r.confirmed,
            late=r.timed_out,
        )
