"""Through a real HAProxy (deploy/haproxy.cfg) to two signaling server processes sharing a
real Redis (issue #15, items 3 and 4): real patient and clinician nodes stream vitals over
the WebSocket relay; the server holding the patient is SIGKILLed mid-stream; the patient
reconnects through HAProxy to the other server and resumes there; the session and its
admission are still there, and the clinician gets every message once, in order. The same
with the server drained (SIGTERM: /healthz 503, `reconnect` to every connection)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cluster.lb import haproxy
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_nodes import cluster_procs, join_url
from tests.node.conftest import check_stream, start_proc


async def holder(redis: RedisProcess, session: str, eid: str) -> tuple[str, bool]:
    r = aioredis.Redis.from_url(redis.url)
    try:
        raw = await r.hget(f"p2pmed:s:{session}", eid)
    finally:
        await r.aclose()
    assert raw is not None, f"{eid} not in the store"
    _, _, _, admitted, server = json.loads(raw)
    return str(server), bool(admitted)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "drain"])
async def test_server_killed_mid_stream_through_haproxy(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, sig: signal.Signals
) -> None:
    async with cluster_procs(tmp_path, redis_srv, shared_key) as servers:
        by_id = dict(zip("AB", servers, strict=True))
        addrs = [s.url.removeprefix("http://") for s in servers]
        async with haproxy(addrs, tmp_path / "haproxy.log") as lb:
            lb_srv = type("LB", (), {"url": lb})()
            patient = await start_proc(
                join_url(lb_srv, shared_key, "s1", "patient"),  # type: ignore[arg-type]
                "patient",
                *("--data-dir", str(tmp_path / "p"), "--ice-relay-only"),
            )
            clinician = await start_proc(
                join_url(lb_srv, shared_key, "s1", "clinician"),  # type: ignore[arg-type]
                "clinician",
                *("--data-dir", str(tmp_path / "c"), "--ice-relay-only"),
            )
            try:
                pid = (await patient.w.wait_for("joined"))["endpoint_id"]
                cid = (await clinician.w.wait_for("joined"))["endpoint_id"]
                await clinician.w.wait_for("path", active="relay")
                await clinician.w.wait_count("message", 100, path="relay")
                p_srv, _ = await holder(redis_srv, "s1", pid)
                c_srv, _ = await holder(redis_srv, "s1", cid)
                print(f"\npatient on {p_srv}, clinician on {c_srv}")
                victim = by_id[p_srv]
                victim.proc.send_signal(sig)
                await victim.proc.wait()
                n = len(clinician.w.of("message"))
                ups = len(patient.w.of("signaling", state="up"))
                # the patient rejoins through HAProxy, on the other server
                await patient.w.wait_for("signaling", state="down")
                await patient.w.wait_count("signaling", ups + 1, timeout=60, state="up")
                await clinician.w.wait_count("message", n + 200, timeout=60)
                p_now, admitted = await holder(redis_srv, "s1", pid)
                assert p_now != p_srv and admitted  # moved, admission kept
                rejected = clinician.w.of("rejected") + patient.w.of("rejected")
            finally:
                await patient.stop()
                await clinician.stop()
        for p in (patient, clinician):
            assert b"Traceback" not in p.stderr, p.stderr.decode()[-2000:]
        check_stream(patient.w.of("sent", peer=cid), clinician.w.of("message"))
        assert not clinician.w.of("waveform-gap")
        assert not rejected
