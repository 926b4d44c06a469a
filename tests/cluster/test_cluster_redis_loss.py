"""A cluster server cut from Redis (issue #15, item 3): it refuses new joins with a clear
error and /healthz 503, keeps the endpoints it holds, and recovers by itself when Redis is
back, even a Redis restarted empty (the servers put back what they hold)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_relay import consult
from tests.cluster.test_cluster_state import audit, pair
from tests.signaling.conftest import Client, Harness, settle


async def test_redis_lost_then_restarted_empty(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        ha, hb = Harness(a, http), Harness(b, http)
        pat, doc = await consult(ha, hb)
        await redis_srv.stop()
        await settle(lambda: not a.hub.store.available() and not b.hub.store.available())
        async with http.get(a.url + "/healthz") as r:
            assert r.status == 503 and (await r.json())["status"] == "store-unavailable"
        late = Client(await http.ws_connect(a.ws_url))
        await late.send(type="join", token=a.mint("s2", "clinician"), endpoint_id="late")
        code, seen = await late.closed()
        assert code == 1012
        assert seen == [{"type": "reconnect", "after_ms": 1000, "reason": "store-unavailable"}]
        assert any(e["event"] == "reject" and e["reason"] == "store-unavailable" for e in audit(a))
        # what A holds is untouched
        await pat.send(type="ping", id=1)
        assert await pat.recv_type("pong") == {"type": "pong", "id": 1}

        await redis_srv.start()  # same port, empty: no persistence
        await settle(lambda: a.hub.store.available() and b.hub.store.available())
        # both servers put back the endpoints they hold, with their admissions
        members = await a.hub.store.members("s1")
        assert {(m.endpoint_id, m.server, m.admitted) for m in members} == {
            ("pat", "A", True),
            ("doc", "B", True),
        }
        # and serve again: a new join, and signaling across servers (re-subscribed)
        _again, joined = await ha.join("s2", "clinician", "again")
        assert joined["type"] == "joined"

        async def offer_arrives() -> bool:
            await pat.send(type="offer", to="doc", sdp="after")
            msg = await doc.ws.receive(timeout=1.0)
            return msg.type == aiohttp.WSMsgType.TEXT and '"after"' in msg.data

        # the bus subscription comes back within a beat of Redis; offers are at most once,
        # so the test resends until one arrives (as a node renegotiates)
        for _ in range(50):
            if await offer_arrives():
                break
        else:
            raise AssertionError("signaling across servers never came back")
