"""Wards across a cluster (issues #14 and #15): real Redis, real `p2pmed signaling --redis`
processes, real WebSocket clients. A central station sees every bed of its ward whichever
server holds the bed's patient, wards stay apart, and the ward limits and "a bed session in
one ward only" hold for the cluster, not per server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from signaling.config import Config
from signaling.keys import load_secret
from signaling.testing import ServerProcess, server_process
from signaling.tokens import mint
from tests.cluster.redisproc import RedisProcess
from tests.station.conftest import Client


class Cluster:
    def __init__(self, servers: list[ServerProcess], key: Path, http: aiohttp.ClientSession):
        self.servers = servers
        self.key = load_secret(key)
        self.http = http

    def mint(self, session: str, role: str, **kw: Any) -> str:
        d = Config(data_dir=Path("."))
        token, _ = mint(
            self.key,
            session=session,
            role=role,
            ttl=600,
            issuer=d.issuer,
            audience=d.audience,
            **kw,
        )
        return token

    def bed(self, ward: str, bed: str) -> str:
        return self.mint(bed, "patient", ward=ward)

    def station(self, ward: str) -> str:
        return self.mint(f"ward.{ward}", "station", ward=ward)

    async def join(self, srv: ServerProcess, token: str, endpoint_id: str) -> Client:
        c = Client(await self.http.ws_connect(srv.ws_url))
        await c.send(type="join", token=token, endpoint_id=endpoint_id)
        return c


@contextlib.asynccontextmanager
async def cluster(
    tmp: Path, redis: RedisProcess, key: Path, n: int, *extra: str
) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for sid in "ABC"[:n]:
            args = ("--redis", redis.url, "--token-key", str(key), "--server-id", sid, *extra)
            servers.append(
                await stack.enter_async_context(server_process(tmp / f"srv-{sid}", *args))
            )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Cluster(servers, key, http)


def rejects(srv: ServerProcess, reason: str) -> int:
    lines = (srv.data_dir / "audit.jsonl").read_text().splitlines()
    return sum(
        1 for x in map(json.loads, lines) if x["event"] == "reject" and x["reason"] == reason
    )


async def test_station_on_b_follows_a_bed_held_by_a(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 2) as c:
        a, b = c.servers
        pat = await c.join(a, c.bed("icu", "bed1"), "pat1")
        joined = await pat.recv_type("joined")
        assert joined["waiting"] is True
        # the station logs in on B: the ward snapshot has the bed A holds
        st = await c.join(b, c.station("icu"), "st1")
        await st.recv_type("joined")
        snap = await st.recv_type("ward")
        assert [(x["session"], x["state"], x["patient"]) for x in snap["beds"]] == [
            ("bed1", "waiting", "pat1")
        ]
        # it joins the bed on B with its bed token and admits the patient held by A
        doc = await c.join(b, snap["beds"][0]["token"], "st1")
        await doc.recv_type("peer-waiting", endpoint_id="pat1")
        await doc.send(type="admit", endpoint_id="pat1")
        await pat.recv_type("admitted")
        assert (await st.recv_type("bed", session="bed1"))["state"] == "live"
        # a bed that joins A later appears on the station B holds
        pat2 = await c.join(a, c.bed("icu", "bed2"), "pat2")
        await pat2.recv_type("joined")
        late = await st.recv_type("bed", session="bed2")
        assert (late["state"], late["patient"]) == ("waiting", "pat2")
        # bed1's link drops on A, it resumes on B, then leaves
        await pat.ws.close()
        assert (await st.recv_type("bed", session="bed1"))["state"] == "link-lost"
        pat = await c.join(b, joined["resume_token"], "pat1")
        assert (await pat.recv_type("joined"))["waiting"] is False
        assert (await st.recv_type("bed", session="bed1"))["state"] == "live"
        await pat.send(type="leave")
        assert (await st.recv_type("bed", session="bed1"))["state"] == "ended"
        # a second station, on A, gets the whole ward from the shared registry
        st2 = await c.join(a, c.station("icu"), "st2")
        snap2 = await st2.recv_type("ward")
        assert [(x["session"], x["state"]) for x in snap2["beds"]] == [
            ("bed1", "ended"),
            ("bed2", "waiting"),
        ]
        # each server audits the bed events it saw
        audit_a = (a.data_dir / "audit.jsonl").read_text()
        assert '"event":"ward-bed"' in audit_a.replace(" ", "")
        assert '"event":"ward-admit"' in (b.data_dir / "audit.jsonl").read_text().replace(" ", "")


async def test_two_wards_across_the_cluster_stay_isolated(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 3) as c:
        a, b, s3 = c.servers
        # ward X: station on A, beds on B and C; ward Y: station on B, beds on A and C
        stx = await c.join(a, c.station("X"), "stx")
        sty = await c.join(b, c.station("Y"), "sty")
        assert (await stx.recv_type("ward"))["beds"] == []
        assert (await sty.recv_type("ward"))["beds"] == []
        beds = {}
        for ward, bed, srv in [("X", "x1", b), ("Y", "y1", a), ("X", "x2", s3), ("Y", "y2", s3)]:
            p = await c.join(srv, c.bed(ward, bed), f"p-{bed}")
            await p.recv_type("joined")
            beds[bed] = p
        # each station hears of its own beds, in order, and of nothing else
        for st, own in ((stx, ["x1", "x2"]), (sty, ["y1", "y2"])):
            seen = []
            while len(seen) < 2:
                m = await st.recv()
                assert m["type"] in ("bed", "pong"), m
                if m["type"] == "bed":
                    seen.append((m["ward"], m["session"], m["state"]))
            ward = own[0][0].upper()
            assert seen == [(ward, own[0], "waiting"), (ward, own[1], "waiting")]
        # a bed of Y ends: only Y's station hears it; X's next message is its own bed
        await beds["y1"].send(type="leave")
        m = await sty.recv()
        assert (m["type"], m["session"], m["state"]) == ("bed", "y1", "ended")
        await beds["x1"].send(type="leave")
        m = await stx.recv()
        assert (m["type"], m["session"], m["state"]) == ("bed", "x1", "ended")
        # late stations, on the server holding the other ward's station, see their ward only
        lx = await c.join(b, c.station("X"), "lx")
        ly = await c.join(a, c.station("Y"), "ly")
        assert {x["session"] for x in (await lx.recv_type("ward"))["beds"]} == {"x1", "x2"}
        assert {x["session"] for x in (await ly.recv_type("ward"))["beds"]} == {"y1", "y2"}


async def test_beds_and_stations_per_ward_are_counted_for_the_cluster(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    limits = ("--max-beds-per-ward", "3", "--max-stations-per-ward", "1")
    async with cluster(tmp_path, redis_srv, shared_key, 2, *limits) as c:
        a, b = c.servers
        st = await c.join(a, c.station("W"), "s1")
        assert (await st.recv_type("ward"))["beds"] == []
        p1 = await c.join(a, c.bed("W", "b1"), "p1")
        await st.recv_type("bed", session="b1")
        p2 = await c.join(b, c.bed("W", "b2"), "p2")
        await st.recv_type("bed", session="b2")
        # one place left: two beds race for it on two servers; exactly one gets it
        racers = dict(
            zip(
                ("b3", "b4"),
                await asyncio.gather(
                    c.join(a, c.bed("W", "b3"), "p3"), c.join(b, c.bed("W", "b4"), "p4")
                ),
                strict=True,
            )
        )
        won = await st.recv_type("bed")
        assert won["session"] in racers and won["state"] == "waiting"
        [lost] = [r for bed, r in racers.items() if bed != won["session"]]
        assert (await lost.refused()) == ("ward-beds-full", 4503)
        assert rejects(a, "ward-beds-full") + rejects(b, "ward-beds-full") == 1
        for p in (p1, p2, racers[won["session"]]):
            await p.send(type="ping")
            await p.recv_type("pong")
        # another ward still has room
        other = await c.join(b, c.bed("V", "v1"), "pv")
        await other.recv_type("joined")
        # the station limit: one station on A, a second one on B is refused
        st2 = await c.join(b, c.station("W"), "s2")
        assert (await st2.refused()) == ("ward-stations-full", 4503)
        assert rejects(b, "ward-stations-full") == 1


async def test_a_bed_session_belongs_to_one_ward_across_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 2) as c:
        a, b = c.servers
        st = await c.join(a, c.station("X"), "sx")
        await st.recv_type("ward")
        p = await c.join(a, c.bed("X", "x1"), "px")
        await st.recv_type("bed", session="x1", state="waiting")
        await p.send(type="leave")  # x1 stays a bed of X (ended)
        await st.recv_type("bed", session="x1", state="ended")
        other = await c.join(b, c.bed("Y", "x1"), "py")
        assert (await other.refused()) == ("bed-other-ward", 4403)
        plain = await c.join(b, c.mint("x1", "patient"), "pz")
        assert (await plain.refused()) == ("bed-other-ward", 4403)
        assert rejects(b, "bed-other-ward") == 2
        # its own ward's patient comes back, on B, to the same bed
        again = await c.join(b, c.bed("X", "x1"), "px2")
        bed = await st.recv_type("bed", session="x1")
        assert (bed["state"], bed["patient"]) == ("waiting", "px2")
        sy = await c.join(b, c.station("Y"), "sy")
        assert (await sy.recv_type("ward"))["beds"] == []
        await again.send(type="ping")
        await again.recv_type("pong")
