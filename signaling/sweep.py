"""Idle logoff, reconnect-grace expiry and token revocation, run periodically by the server."""

from __future__ import annotations

import time

from aiohttp import web

from signaling import closecodes as cc
from signaling.revoking import Revocations

# Removing an endpoint costs tens of microseconds (audit entry, log line, peer notices); after
# a mass disconnect thousands expire together, and one pass over all of them stalled joins and
# relaying for ~350 ms. The caller runs passes of at most SWEEP_BUDGET removals, pausing between.
SWEEP_BUDGET = 50


class Sweeper(Revocations):
    def sweep(
        self, budget: int = SWEEP_BUDGET
    ) -> tuple[list[tuple[web.WebSocketResponse, int, str, str]], bool]:
        """Revocation, then idle logoff and reconnect-grace expiry for at most `budget`
        endpoints, resume-token renewals included. Returns the sockets to close and whether
        work remains for another pass."""
        now = time.monotonic()
        closes: list[tuple[web.WebSocketResponse, int, str, str]] = []
        more = False
        # revocations written since the last sweep (by `p2pmed token revoke`, any process)
        fresh, self.revoked_rowid = self.revocations.revoked_since(self.revoked_rowid)
        revoked = {j for j in fresh if j in self.jti_owner}
        self.check_revocations(now)
        eps = [e for s in self.sessions.values() for e in s.endpoints.values()]
        for e in eps:
            if e.jti in revoked:
                self.audit.append("revoked", session=e.session.id, endpoint_id=e.id, jti=e.jti)
                self.start_revocation(e)
                if e.ws is not None:
                    closes.append((e.ws, cc.REVOKED, "token-revoked", "token was revoked"))
                e.ws = None
                self.remove(e, "revoked")
                continue
            idle = e.ws is not None and now - e.last_activity > self.config.idle_timeout
            expired = (
                e.ws is None
                and e.disconnected_at is not None
                and now - e.disconnected_at > self.config.reconnect_grace
            )
            if e.ws is not None and (
                e.resume_at is None or now - e.resume_at > self.config.resume_ttl / 3
            ):
                # minting costs ~0.1 ms: endpoints that joined together renew together, so
                # renewals share the pass budget like removals do
                if budget > 0:
                    budget -= 1
                    self.post(e, {"type": "resume-token", "token": self.resume_token(e)})
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
                self.audit.append("logoff", session=e.session.id, endpoint_id=e.id, role=e.role)
                closes.append((e.ws, cc.TIMEOUT, "idle-timeout", "logged off after inactivity"))
                e.ws = None
                self.remove(e, "idle")
            else:
                self.remove(e, "disconnected")
        return closes, more
