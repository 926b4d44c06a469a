"""Two signaling servers sharing one real Redis (issue #15, item 1): sessions, the waiting
room, which server holds each endpoint, token bindings, revocations, join limits, resume on
another server, audit entries naming their server, and the start-up refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from signaling.config import Limits
from signaling.testing import RunningServer, running_server
from tests.cluster.redisproc import RedisProcess
from tests.signaling.conftest import Client, Harness, settle


@contextlib.asynccontextmanager
async def pair(
    tmp: Path, redis: RedisProcess, key: Path, **kw: Any
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    common = {"redis_url": redis.url, "token_key": key, **kw}
    async with (
        running_server(tmp / "a", server_id="A", **common) as a,
        running_server(tmp / "b", server_id="B", **common) as b,
    ):
        yield a, b


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    lines = (srv.config.data_dir / "audit.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


async def test_waiting_room_admission_and_signaling_across_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        ha, hb = Harness(a, http), Harness(b, http)
        pat, joined = await ha.join("s1", "patient", "pat")
        assert joined["waiting"] is True
        doc, joined = await hb.join("s1", "clinician", "doc")
        # B sees the patient A holds, in the waiting room
        assert joined["peers"] == [{"endpoint_id": "pat", "role": "patient", "admitted": False}]
        assert await doc.recv() == {"type": "peer-waiting", "endpoint_id": "pat", "role": "patient"}
        m = await b.hub.store.member("s1", "pat")
        assert m is not None and m.server == "A" and not m.admitted
        await doc.send(type="admit", endpoint_id="pat")
        assert await pat.recv() == {"type": "admitted", "by": "doc"}
        assert await pat.recv() == {
            "type": "peer-joined",
            "endpoint_id": "doc",
            "role": "clinician",
        }
        assert await doc.recv() == {"type": "peer-joined", "endpoint_id": "pat", "role": "patient"}
        m = await a.hub.store.member("s1", "pat")
        assert m is not None and m.admitted
        assert a.hub.endpoint("s1", "pat") is not None and b.hub.endpoint("s1", "pat") is None
        # signaling messages cross servers
        await pat.send(type="offer", to="doc", sdp="v=0 offer")
        got = await doc.recv()
        assert got == {"type": "offer", "to": "doc", "sdp": "v=0 offer", "from": "pat"}
        await doc.send(type="answer", to="pat", sdp="v=0 answer")
        assert (await pat.recv())["sdp"] == "v=0 answer"
        # leaving on B reaches A
        await doc.send(type="leave")
        assert await pat.recv() == {"type": "peer-left", "endpoint_id": "doc"}
        assert [x.endpoint_id for x in await a.hub.store.members("s1")] == ["pat"]


async def test_join_token_bound_across_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        token = a.mint("s1", "clinician")
        doc, _ = await Harness(a, http).join("s1", "clinician", "doc", token)
        other = Client(await http.ws_connect(b.ws_url))
        await other.send(type="join", token=token, endpoint_id="thief")
        code, seen = await other.closed()
        assert code == 4401 and seen[-1]["code"] == "token-in-use"
        # the binding outlives the endpoint: after doc leaves, B still refuses another one
        await doc.send(type="leave")
        await doc.closed()
        again = Client(await http.ws_connect(b.ws_url))
        await again.send(type="join", token=token, endpoint_id="thief")
        code, seen = await again.closed()
        assert code == 4401 and seen[-1]["code"] == "token-in-use"
        assert b.metric("p2pmed_rejected_joins_total", reason="token-in-use") == 2


async def test_revocation_on_one_server_closes_the_endpoint_on_another(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        pat, _ = await Harness(a, http).join("s1", "patient", "pat")
        token = b.mint("s1", "clinician")
        doc, _ = await Harness(b, http).join("s1", "clinician", "doc", token)
        t0 = time.monotonic()
        a.revoke(jti_of(token))  # `p2pmed token revoke` on A's data dir
        code, seen = await doc.closed()
        elapsed = time.monotonic() - t0
        print(f"revoked on A, closed on B after {elapsed * 1000:.0f} ms")
        assert code == 4410 and seen[-1]["code"] == "token-revoked"
        assert any(e["event"] == "revoked" and e["server"] == "B" for e in audit(b))
        # and B refuses it at once from then on
        again = Client(await http.ws_connect(b.ws_url))
        await again.send(type="join", token=token, endpoint_id="doc")
        code, seen = await again.closed()
        assert code == 4401 and seen[-1]["code"] == "token-revoked"
        assert await a.hub.store.member("s1", "doc") is None
        await pat.send(type="ping")
        assert (await pat.recv_type("pong"))["type"] == "pong"


async def test_join_limit_per_ip_is_shared(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    lim = Limits(join_rate=0.01, join_burst=3)
    async with pair(tmp_path, redis_srv, shared_key, limits=lim) as (a, b):
        for i in range(3):
            await Harness(a if i % 2 else b, http).join(f"s{i}", "clinician", "doc")
        late = Client(await http.ws_connect(b.ws_url))
        await late.send(type="join", token=b.mint("s9", "clinician"), endpoint_id="doc")
        code, seen = await late.closed()
        # B's own bucket still had tokens (it saw 2 joins): the cluster's refused
        assert code == 4429 and seen[-1]["code"] == "too-many-joins"


async def test_endpoint_resumes_on_another_server(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        doc, _ = await Harness(b, http).join("s1", "clinician", "doc")
        pat, joined = await Harness(a, http).join("s1", "patient", "pat")
        await doc.recv_type("peer-waiting")
        await doc.send(type="admit", endpoint_id="pat")
        await pat.recv_type("admitted")
        await doc.recv_type("peer-joined")
        resume = (await pat.recv_type("peer-joined"), joined["resume_token"])[1]
        moved = Client(await http.ws_connect(b.ws_url))  # the patient comes back through B
        await moved.send(type="join", token=resume, endpoint_id="pat")
        again = await moved.recv_type("joined")
        assert again["waiting"] is False  # the admission is still there
        assert again["peers"] == [{"endpoint_id": "doc", "role": "clinician", "admitted": True}]
        code, _ = await pat.closed()  # A let go of it
        assert code == 4409
        assert await doc.recv() == {"type": "peer-reconnected", "endpoint_id": "pat"}
        m = await a.hub.store.member("s1", "pat")
        assert m is not None and m.server == "B" and m.admitted
        assert a.hub.endpoint("s1", "pat") is None and b.hub.endpoint("s1", "pat") is not None
        await doc.send(type="offer", to="pat", sdp="x")
        assert (await moved.recv_type("offer"))["from"] == "doc"
        assert any(e["event"] == "moved" for e in audit(a))


async def test_audit_entries_name_their_server_and_verify(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        await Harness(a, http).join("s1", "patient", "pat")
        await Harness(b, http).join("s1", "clinician", "doc")
    for srv, sid in ((a, "A"), (b, "B")):
        entries = audit(srv)
        assert entries and all(e["server"] == sid for e in entries)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "p2pmed",
                "audit",
                "verify",
                str(srv.config.data_dir / "audit.jsonl"),
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("OK:")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("P2PMED_")}
    return subprocess.run(
        [sys.executable, "-m", "p2pmed", "signaling", "--port", "0", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**clean, **(env or {})},
    )


async def test_redis_without_shared_key_refused_at_start(
    tmp_path: Path, redis_srv: RedisProcess
) -> None:
    res = await asyncio.to_thread(
        run_cli, "--data-dir", str(tmp_path / "d"), env={"P2PMED_REDIS_URL": redis_srv.url}
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--token-key" in lines[0], res.stderr
    assert not (tmp_path / "d" / "token-key").exists()


async def test_unreachable_redis_refused_at_start(tmp_path: Path, shared_key: Path) -> None:
    from signaling.testing import free_port

    url = f"redis://:secretpw@127.0.0.1:{free_port()}/0"
    res = await asyncio.to_thread(
        run_cli, "--data-dir", str(tmp_path / "d"), "--redis", url, "--token-key", str(shared_key)
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis" in lines[0], res.stderr
    assert "secretpw" not in res.stderr


async def test_revocation_confirmed_by_peer_on_another_server(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        pat, _ = await Harness(a, http).join("s1", "patient", "pat")
        token = b.mint("s1", "clinician")
        doc, _ = await Harness(b, http).join("s1", "clinician", "doc", token)
        await doc.recv_type("peer-waiting")
        await doc.send(type="admit", endpoint_id="pat")
        await pat.recv_type("peer-joined")
        a.revoke(jti_of(token))  # revoked on A; the endpoint is on B, its peer on A
        code, _ = await doc.closed()
        assert code == 4410
        # the patient may hold a direct path with it: it is told, closes it, confirms
        assert await pat.recv_type("peer-revoked") == {"type": "peer-revoked", "endpoint_id": "doc"}
        await pat.send(type="revocation-done", endpoint_id="doc")
        assert await pat.recv_type("peer-left") == {"type": "peer-left", "endpoint_id": "doc"}

        def complete() -> list[dict[str, Any]]:
            return [e for e in audit(b) if e["event"] == "revoke-complete"]

        await settle(lambda: bool(complete()))
        assert complete()[0]["peers"] == ["pat"] and complete()[0]["late"] is False


async def test_sessions_isolated_across_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        ha, hb = Harness(a, http), Harness(b, http)
        p1, _ = await ha.join("ward1-bed1", "patient", "p1")
        d1, j1 = await hb.join("ward1-bed1", "clinician", "d1")
        _p2, _ = await hb.join("ward2-bed1", "patient", "p2")
        d2, j2 = await ha.join("ward2-bed1", "clinician", "d2")
        assert [x["endpoint_id"] for x in j1["peers"]] == ["p1"]
        assert [x["endpoint_id"] for x in j2["peers"]] == ["p2"]
        for doc, pat in ((d1, "p1"), (d2, "p2")):
            await doc.recv_type("peer-waiting")
            await doc.send(type="admit", endpoint_id=pat)
            await doc.recv_type("peer-joined")
        # d1 (on B) cannot reach p2 (on B, other session) nor d2 (on A, other session)
        for target in ("p2", "d2"):
            await d1.send(type="offer", to=target, sdp="x")
            err = await d1.recv_type("error")
            assert err["code"] == "unknown-peer" and err["to"] == target
            await d1.ws.send_bytes(bytes((len(target),)) + target.encode() + b"frame")
            err = await d1.recv_type("error")
            assert err["code"] == "unknown-peer"
        await d1.send(type="admit", endpoint_id="p2")
        assert (await d1.recv_type("error"))["code"] == "not-waiting"
        await p1.send(type="offer", to="d1", sdp="ok")
        assert (await d1.recv_type("offer"))["from"] == "p1"
