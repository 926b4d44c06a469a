"""Wards through a cluster's failures (issues #14 and #15): a SIGKILLed server's bed moves on
(link-lost when the server is seen dead, ended when the reaper removes it) instead of
staying live; after Redis restarts empty, the servers put back their beds and the stations
get their ward again without any endpoint reconnecting. Real Redis, real server processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from signaling.state.wards_redis import RedisWardRegistry
from signaling.testing import ServerProcess
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_wards import cluster


async def beds_in_redis(url: str, ward: str) -> dict[str, tuple[str, str]]:
    r = aioredis.Redis.from_url(url)
    try:
        return {
            b.session: (b.state, b.patient)
            for b in await RedisWardRegistry(r, "p2pmed:").beds(ward)
        }
    finally:
        await r.aclose()


async def health(http: aiohttp.ClientSession, srv: ServerProcess) -> int:
    async with http.get(srv.url + "/healthz") as r:
        return r.status


async def until(cond: Any, limit: float = 20.0) -> None:
    end = asyncio.get_running_loop().time() + limit
    while not await cond():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.05)


async def station_and_live_bed(c: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Station st1 on server B, bed1's patient pat1 on server A, admitted from the station:
    the station has seen bed1 go live. Also returns the station's first `ward` message."""
    a, b = c.servers
    st = await c.join(b, c.station("icu"), "st1")
    ward = await st.recv_type("ward")
    p1 = await c.join(a, c.bed("icu", "bed1"), "pat1")
    await p1.recv_type("joined")
    bed1 = await st.recv_type("bed", session="bed1", state="waiting")
    doc = await c.join(b, bed1["token"], "st1")
    await doc.recv_type("peer-waiting", endpoint_id="pat1")
    await doc.send(type="admit", endpoint_id="pat1")
    await st.recv_type("bed", session="bed1", state="live")
    return st, p1, ward


async def test_a_killed_servers_bed_goes_link_lost_then_ended(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 2, "--reconnect-grace", "1") as c:
        a, b = c.servers
        st, _p1, ward = await station_and_live_bed(c)
        assert ward["beds"] == []
        p2 = await c.join(a, c.bed("icu", "bed2"), "pat2")
        resume2 = (await p2.recv_type("joined"))["resume_token"]
        await st.recv_type("bed", session="bed2", state="waiting")

        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        # bed2's patient resumes on B at once; bed1's never comes back
        p2 = await c.join(b, resume2, "pat2")
        await p2.recv_type("joined")
        seen = []
        while ("bed1", "ended") not in seen:
            m = await st.recv()
            if m["type"] == "bed":
                seen.append((m["session"], m["state"]))
        assert seen == [("bed1", "link-lost"), ("bed1", "ended")]
        assert await beds_in_redis(redis_srv.url, "icu") == {
            "bed1": ("ended", "pat1"),
            "bed2": ("waiting", "pat2"),
        }
        # a station logging in now gets the same picture
        st2 = await c.join(b, c.station("icu"), "st2")
        snap = await st2.recv_type("ward")
        assert [(x["session"], x["state"]) for x in snap["beds"]] == [
            ("bed1", "ended"),
            ("bed2", "waiting"),
        ]


async def test_redis_restarted_empty_the_wards_come_back(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 2) as c:
        a, b = c.servers
        st, p1, _ward = await station_and_live_bed(c)
        p2 = await c.join(b, c.bed("icu", "bed2"), "pat2")
        await p2.recv_type("joined")
        await st.recv_type("bed", session="bed2", state="waiting")

        await redis_srv.stop()

        async def both(status: int) -> bool:
            return [await health(c.http, s) for s in (a, b)] == [status, status]

        await until(lambda: both(503))
        await redis_srv.start()  # same port, empty: no persistence
        await until(lambda: both(200))
        # no endpoint reconnected: the servers put back the beds they hold
        want = {"bed1": ("live", "pat1"), "bed2": ("waiting", "pat2")}

        async def registry_back() -> bool:
            return await beds_in_redis(redis_srv.url, "icu") == want

        await until(registry_back)
        # the station is sent its ward again (a snapshot, and what came back after it)
        view: dict[str, str] = {}
        snapshots = 0
        while view != {"bed1": "live", "bed2": "waiting"}:
            m = await st.recv()
            if m["type"] == "ward":
                snapshots += 1
                view = {x["session"]: x["state"] for x in m["beds"]}
            elif m["type"] == "bed" and snapshots:
                view[m["session"]] = m["state"]
        # and later changes reach it (the ward versions restarted with Redis)
        await p2.send(type="leave")
        await st.recv_type("bed", session="bed2", state="ended")
        await p1.ws.close()
        await st.recv_type("bed", session="bed1", state="link-lost")
