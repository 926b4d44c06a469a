"""The terminal central station against real patient nodes held by two servers of a cluster
(real Redis, real `p2pmed signaling --redis` processes): every bed's vitals, link lost and
back, nothing lost."""

from __future__ import annotations

from pathlib import Path

from signaling.testing import ServerProcess
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_wards import cluster
from tests.node.conftest import NodeProc, check_stream, start_proc


async def test_terminal_station_on_b_watches_real_beds_on_both_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with cluster(tmp_path, redis_srv, shared_key, 2) as c:
        a, b = c.servers

        def url(srv: ServerProcess, token: str) -> str:
            return f"{srv.url}/join#token={token}"

        async def bed(srv: ServerProcess, name: str) -> NodeProc:
            data = ("--data-dir", str(tmp_path / name))
            return await start_proc(url(srv, c.bed("icu", name)), name, *data)

        b1 = await bed(a, "b1")
        b2 = await bed(b, "b2")
        st = await start_proc(
            url(b, c.station("icu")), "station", "--data-dir", str(tmp_path / "st")
        )
        b1_again = None
        try:
            sid = (await st.w.wait_for("joined", role="station"))["endpoint_id"]
            for name in ("b1", "b2"):
                await st.w.wait_for("message", bed=name, kind="numerics")
            # b1's node (held by A) dies: the station on B sees its link lost, then back
            await st.w.wait_count("message", 10, bed="b1")
            b1.kill()
            await b1.stop()
            await st.w.wait_for("bed", bed="b1", state="link-lost")
            n = len(st.w.events)
            b1_again = await bed(a, "b1")
            await st.w.wait_for("bed", bed="b1", state="live", after=n)
            await st.w.wait_count("message", len(st.w.of("message", bed="b1")) + 20, bed="b1")
        finally:
            for p in (b1, b2, b1_again):
                if p is not None:
                    await p.stop()
            assert await st.stop() == 0
        assert b1_again is not None
        sent = b1.w.of("sent", peer=sid) + b1_again.w.of("sent", peer=sid)
        first: dict[str, int] = {}
        for e in b1_again.w.of("sent", peer=sid):
            first.setdefault(e["cls"], e["id"])
        check_stream(sent, st.w.of("message", bed="b1"), unlogged_below=first)
        check_stream(b2.w.of("sent", peer=sid), st.w.of("message", bed="b2"))
        assert not st.w.of("waveform-gap")
