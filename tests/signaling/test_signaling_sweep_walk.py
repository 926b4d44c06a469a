"""The sweep's walk over every endpoint held runs at most once a second (a cluster sweeps
every 0.25 s for revocations): a pass without the walk still closes a revoked endpoint at
once, and leaves grace expiry to the next walk. /healthz counts endpoints without a walk."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from signaling.endpoint import Endpoint
from signaling.local import LocalEndpoints
from signaling.state.store import Member
from signaling.testing import running_server
from tests.signaling.conftest import Harness, settle


async def test_pass_without_walk_revokes_but_does_not_expire(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, reconnect_grace=3600) as srv:
        h = Harness(srv, http)
        gone, _ = await h.join("s1", "clinician", "away")
        await gone.ws.close()
        hub = srv.hub
        away = hub.local.get("s1", "away")
        assert away is not None
        await settle(lambda: away.ws is None)
        away.disconnected_at = time.monotonic() - 3601  # its grace is over
        # no revocation and no walk: the expired endpoint waits for the next walk
        assert await hub.sweeper.sweep(walk=False) == ([], False)
        assert hub.local.get("s1", "away") is away
        # a revocation walks at once, without waiting for the walk's time
        token = srv.mint("s2", "clinician", jti="jr")
        await h.join("s2", "clinician", "doc", token=token)
        srv.revoke("jr")
        closes, more = await hub.sweeper.sweep(walk=False)
        assert [c[2] for c in closes] == ["token-revoked"] and not more
        assert hub.local.get("s2", "doc") is None
        assert hub.local.get("s1", "away") is None  # the walk removed it too


async def test_healthz_counts_endpoints(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path) as srv:
        h = Harness(srv, http)
        await h.join("s1", "clinician", "a")
        await h.join("s1", "observer", "b")
        async with http.get(srv.url + "/healthz") as r:
            assert await r.json() == {"status": "ok", "sessions": 1, "endpoints": 2}


def test_local_count_follows_add_replace_discard() -> None:
    local = LocalEndpoints()
    a1 = Endpoint(Member("s", "a", "clinician", "j", True), "ip")
    a2 = Endpoint(Member("s", "a", "clinician", "j", True), "ip")
    b = Endpoint(Member("s", "b", "clinician", "j", True), "ip")
    local.add(a1)
    local.add(b)
    local.add(a2)  # replaces a1
    assert len(local) == 2 == len(local.all())
    local.discard(a1)  # no longer the one held: nothing happens
    assert len(local) == 2
    local.discard(a2)
    local.discard(b)
    assert len(local) == 0 == len(local.all())
