"""A server SIGKILLed whose endpoint never comes back (issue #15, item 3): once its
heartbeat has expired and the reconnect grace has passed, another server removes the
endpoint from the shared store, its peer gets peer-left, and the session ends with its last
endpoint; an endpoint of the dead server that resumes elsewhere in time is not touched."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from signaling.testing import running_server, server_process
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_state import audit
from tests.signaling.conftest import Client, Harness


async def test_dead_servers_endpoints_reaped(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    args = ("--redis", redis_srv.url, "--token-key", str(shared_key), "--server-id", "A")
    async with (
        server_process(tmp_path / "a", *args, "--reconnect-grace", "1") as a,
        running_server(
            tmp_path / "b",
            server_id="B",
            redis_url=redis_srv.url,
            token_key=shared_key,
            reconnect_grace=1.0,
        ) as b,
    ):
        hb = Harness(b, http)
        doc, _ = await hb.join("s1", "clinician", "doc")
        pat = Client(await http.ws_connect(a.ws_url))
        await pat.send(type="join", token=b.mint("s1", "patient"), endpoint_id="pat")
        await pat.recv_type("joined")
        obs = Client(await http.ws_connect(a.ws_url))
        await obs.send(type="join", token=b.mint("s1", "observer"), endpoint_id="obs")
        resume = (await obs.recv_type("joined"))["resume_token"]
        await doc.recv_type("peer-waiting")
        m = await b.hub.store.member("s1", "pat")
        assert m is not None and m.server == "A"
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        # the observer resumes on B at once; the patient never comes back
        moved = Client(await http.ws_connect(b.ws_url))
        await moved.send(type="join", token=resume, endpoint_id="obs")
        await moved.recv_type("joined")
        left = await doc.recv_type("peer-left")
        assert left == {"type": "peer-left", "endpoint_id": "pat"}
        assert await b.hub.store.member("s1", "pat") is None
        o = await b.hub.store.member("s1", "obs")
        assert o is not None and o.server == "B"
        reaped = [e for e in audit(b) if e["event"] == "leave" and e.get("why") == "server-lost"]
        assert [(e["endpoint_id"], e["lost"]) for e in reaped] == [("pat", "A")]
        raw = await b.hub.store.r.smembers("p2pmed:servers")  # type: ignore[attr-defined]
        assert {x.decode() for x in raw} == {"B"}
