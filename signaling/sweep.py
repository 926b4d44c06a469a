"""Idle logoff, reconnect-grace expiry and token revocation, run periodically by the server."""

from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web

from signaling import closecodes as cc
from signaling import logs
from signaling.audit import AuditLog
from signaling.config import Config
from signaling.joins import Joins
from signaling.local import LocalEndpoints
from signaling.metrics import Metrics
from signaling.relay import Relay
from signaling.revoking import Revocations
from signaling.state.store import SessionStore, StoreUnavailable
from signaling.tokens import RevocationStore

# Removing an endpoint costs tens of microseconds (audit entry, log line, peer notices); after
# a mass disconnect thousands expire together, and one pass over all of them stalled joins and
# relaying for ~350 ms. The caller runs passes of at most SWEEP_BUDGET removals, pausing between.
SWEEP_BUDGET = 50
# A pass walks every endpoint held (about 1 us each: 5 ms for 5,000). A cluster sweeps every
# 0.25 s to close revoked endpoints within 1 s; the walk for idle logoff, grace expiry and
# resume tokens needs no more than this often (it ran 4 times a second, 5-6 % of a server's
# time in a join storm with 5,000 endpoints held). A revocation walks at once.
WALK_EVERY = 1.0

Close = tuple[web.WebSocketResponse, int, str, str]


class Sweeper:
    """Owns how far it has read the revocation store (`revoked_rowid`)."""

    def __init__(
        self,
        config: Config,
        *,
        store: SessionStore,
        local: LocalEndpoints,
        revoked: RevocationStore,
        audit: AuditLog,
        metrics: Metrics,
        relay: Relay,
        joins: Joins,
        revocations: Revocations,
    ) -> None:
        self.config = config
        self.store = store
        self.local = local
        self.revoked = revoked
        self.audit = audit
        self.metrics = metrics
        self.relay = relay
        self.joins = joins
        self.revocations = revocations
        _, self.revoked_rowid = revoked.revoked_since(0)

    async def sweep(
        self, budget: int = SWEEP_BUDGET, walk: bool = True
    ) -> tuple[list[Close], bool]:
        """Revocation, then idle logoff and reconnect-grace expiry for at most `budget`
        endpoints, resume-token renewals included. Returns the sockets to close and whether
        work remains for another pass. walk=False: the revocations only (no walk over the
        endpoints unless one is revoked)."""
        now = time.monotonic()
        config = self.config
        closes: list[Close] = []
        more = False
        # revocations written since the last sweep (by `p2pmed token revoke`, any process)
        fresh, self.revoked_rowid = self.revoked.revoked_since(self.revoked_rowid)
        revoked = set(fresh)
        for j in fresh:  # the other servers of a cluster close it if they hold it
            try:
                await self.store.announce_revoked(j, self.config.max_token_ttl)
            except StoreUnavailable:
                self.metrics.errors.labels("revocation-not-shared").inc()
                logs.event("revocation-not-shared", level=logging.WARNING, jti=j)
        self.revocations.check(now)
        if not (walk or revoked):
            return closes, False
        for e in self.local.all():
            if e.gone:  # removed while an earlier removal awaited the store
                continue
            if e.jti in revoked:
                self.audit.append("revoked", session=e.session, endpoint_id=e.id, jti=e.jti)
                remote = []
                if self.joins.bus is not None:
                    with contextlib.suppress(StoreUnavailable):
                        remote = [
                            m
                            for m in await self.store.members(e.session)
                            if self.local.get(e.session, m.endpoint_id) is None
                        ]
                bus = self.joins.bus
                for m in self.revocations.start(e, remote):
                    if bus is None:
                        continue
                    with contextlib.suppress(StoreUnavailable):
                        await bus.send(
                            m.server,
                            {
                                "op": "peer-revoked",
                                "session": e.session,
                                "to": m.endpoint_id,
                                "revoked": e.id,
                                "confirm_to": bus.server_id,
                            },
                        )
                if e.ws is not None:
                    closes.append((e.ws, cc.REVOKED, "token-revoked", "token was revoked"))
                e.ws = None
                await self.joins.remove(e, "revoked")
                continue
            idle = e.ws is not None and now - e.last_activity > config.idle_timeout
            expired = (
                e.ws is None
                and e.disconnected_at is not None
                and now - e.disconnected_at > config.reconnect_grace
            )
            if e.ws is not None and (
                e.resume_at is None or now - e.resume_at > config.resume_ttl / 3
            ):
                # minting costs ~0.1 ms: endpoints that joined together renew together, so
                # renewals share the pass budget like removals do
                if budget > 0:
                    budget -= 1
                    self.relay.post(
                        e, {"type": "resume-token", "token": self.joins.resume_token(e)}
                    )
                else:
                    more = True
            if not (idle or expired):
                continue
            if budget <= 0:
                more = True
                continue
            budget -= 1
            if idle and e.ws is not None:
                self.metrics.idle_logoffs.inc()
                self.audit.append("logoff", session=e.session, endpoint_id=e.id, role=e.role)
                closes.append((e.ws, cc.TIMEOUT, "idle-timeout", "logged off after inactivity"))
                e.ws = None
                await self.joins.remove(e, "idle")
            else:
                await self.joins.remove(e, "disconnected")
        return closes, more
