"""Per-client join limits through a real HAProxy (deploy/haproxy.cfg, `option forwardfor`):
two servers sharing Redis, `--trusted-proxy 127.0.0.1/32`. Clients from 127.0.0.2 and
127.0.0.3 get a bucket each (the cluster's, in Redis), and a client cannot leave its bucket
by forging X-Forwarded-For: HAProxy appends the address it saw, the server reads that one."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import aiohttp

from signaling.testing import server_process
from tests.cluster.lb import haproxy
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_wards import Cluster


async def join(url: str, src: str, token: str, eid: str, xff: str | None = None) -> str:
    """Join from source address `src`; 'joined' or the error code."""
    headers = {} if xff is None else {"X-Forwarded-For": xff}
    conn = aiohttp.TCPConnector(local_addr=(src, 0))
    async with aiohttp.ClientSession(connector=conn) as http:
        ws = await http.ws_connect(url + "/ws", headers=headers)
        await ws.send_str(json.dumps({"type": "join", "token": token, "endpoint_id": eid}))
        msg = json.loads((await ws.receive(timeout=10)).data)
        await ws.close()
        return str(msg["type"] if msg["type"] == "joined" else msg["code"])


async def test_clients_behind_haproxy_get_their_own_join_buckets(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for sid in "AB":
            args = ("--redis", redis_srv.url, "--token-key", str(shared_key), "--server-id", sid)
            more = ("--trusted-proxy", "127.0.0.1/32", "--join-rate", "0.01")
            servers.append(
                await stack.enter_async_context(
                    server_process(tmp_path / f"srv-{sid}", *args, *more)
                )
            )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        c = Cluster(servers, shared_key, http)
        hosts = [s.url.removeprefix("http://") for s in servers]
        lb = await stack.enter_async_context(haproxy(hosts, tmp_path / "haproxy.log"))

        # the burst (30 joins) of 127.0.0.2, spread over both servers by HAProxy
        for i in range(30):
            assert await join(lb, "127.0.0.2", c.mint(f"s{i}", "clinician"), f"a{i}") == "joined"
        assert await join(lb, "127.0.0.2", c.mint("s0", "clinician"), "a30") == "too-many-joins"
        # a forged header does not help it: HAProxy's own entry is the one read
        forged = c.mint("s0", "clinician")
        assert await join(lb, "127.0.0.2", forged, "a31", xff="127.0.0.9") == "too-many-joins"
        # another client behind the same proxy has its own bucket
        assert await join(lb, "127.0.0.3", c.mint("s0", "clinician"), "b0") == "joined"

        joins: dict[str, str] = {}
        rejects: list[str] = []
        for s in servers:
            for line in (s.data_dir / "audit.jsonl").read_text().splitlines():
                e = json.loads(line)
                if e["event"] == "join":
                    joins[e["endpoint_id"]] = e["ip"]
                elif e["event"] == "reject":
                    rejects.append(e["ip"])
        assert joins == {**{f"a{i}": "127.0.0.2" for i in range(30)}, "b0": "127.0.0.3"}
        assert rejects == ["127.0.0.2", "127.0.0.2"]
