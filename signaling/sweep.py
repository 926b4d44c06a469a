"""Idle logoff, reconnect-grace expiry and token revocation, run periodically by the server."""

from __future__ import annotations

import time

from aiohttp import web

from signaling import closecodes as cc
from signaling.sessions import Sessions


class Sweeper(Sessions):
    def sweep(self) -> list[tuple[web.WebSocketResponse, int, str, str]]:
        """Idle logoff, reconnect-grace expiry and revocation; returns sockets to close."""
        now = time.monotonic()
        closes: list[tuple[web.WebSocketResponse, int, str, str]] = []
        # revocations written since the last sweep (by `p2pmed token revoke`, any process)
        fresh, self.revoked_rowid = self.revocations.revoked_since(self.revoked_rowid)
        revoked = {j for j in fresh if j in self.jti_owner}
        eps = [e for s in self.sessions.values() for e in s.endpoints.values()]
        for e in eps:
            if e.jti in revoked:
                self.audit.append("revoked", session=e.session.id, endpoint_id=e.id, jti=e.jti)
                if e.ws is not None:
                    closes.append((e.ws, cc.REVOKED, "token-revoked", "token was revoked"))
                e.ws = None
                self.remove(e, "revoked")
            elif e.ws is not None and now - e.last_activity > self.config.idle_timeout:
                self.metrics.idle_logoffs.inc()
                self.audit.append("logoff", session=e.session.id, endpoint_id=e.id, role=e.role)
                closes.append((e.ws, cc.TIMEOUT, "idle-timeout", "logged off after inactivity"))
                e.ws = None
                self.remove(e, "idle")
            elif (
                e.ws is None
                and e.disconnected_at is not None
                and now - e.disconnected_at > self.config.reconnect_grace
            ):
                self.remove(e, "disconnected")
        return closes
