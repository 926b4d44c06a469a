"""Real nodes on different servers of a cluster (issue #15, item 2): a patient node joined
through server A and a clinician node through server B, with two real server processes and
a real Redis, stream vitals over the WebSocket relay (frames cross A -> Redis -> B) and over
the direct path: each message once, in order, bit-exact."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.config import Config
from signaling.keys import load_secret
from signaling.testing import ServerProcess, server_process
from signaling.tokens import mint
from tests.cluster.redisproc import RedisProcess
from tests.node.conftest import check_stream, start_proc


@contextlib.asynccontextmanager
async def cluster_procs(
    tmp: Path, redis: RedisProcess, key: Path, n: int = 2
) -> AsyncIterator[list[ServerProcess]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for i in range(n):
            sid = "ABC"[i]
            srv = await stack.enter_async_context(
                server_process(
                    tmp / f"srv-{sid}",
                    *("--redis", redis.url, "--token-key", str(key), "--server-id", sid),
                )
            )
            servers.append(srv)
        yield servers


def join_url(srv: ServerProcess, key: Path, session: str, role: str) -> str:
    d = Config(data_dir=Path("."))
    token, _ = mint(
        load_secret(key), session=session, role=role, ttl=600, issuer=d.issuer, audience=d.audience
    )
    return f"{srv.url}/join#token={token}"


@pytest.mark.parametrize("path", ["relay", "direct"])
async def test_vitals_between_nodes_on_two_servers(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, path: str
) -> None:
    extra = ("--ice-relay-only",) if path == "relay" else ()
    async with cluster_procs(tmp_path, redis_srv, shared_key) as (a, b):
        patient = await start_proc(
            join_url(a, shared_key, "s1", "patient"),
            "patient",
            *("--data-dir", str(tmp_path / "p"), *extra),
        )
        clinician = await start_proc(
            join_url(b, shared_key, "s1", "clinician"),
            "clinician",
            *("--data-dir", str(tmp_path / "c"), *extra),
        )
        try:
            cid = (await clinician.w.wait_for("joined"))["endpoint_id"]
            await clinician.w.wait_for("path", active=path)
            await clinician.w.wait_count("message", 200, path=path)
            # frames in flight when a side stops are rejected once its session closed
            # (kind "state", counted): only rejections up to here concern the stream
            rejected = clinician.w.of("rejected") + patient.w.of("rejected")
        finally:
            await patient.stop()
            await clinician.stop()
        for p in (patient, clinician):
            assert b"Traceback" not in p.stderr, p.stderr.decode()[-2000:]
        received = clinician.w.of("message")
        assert len([e for e in received if e.get("path") == path]) >= 200
        check_stream(patient.w.of("sent", peer=cid), received)
        assert not clinician.w.of("waveform-gap")
        assert not rejected
        logs = a.log() + b.log()
        assert "bus-undeliverable" not in logs and "relay-credit-lost" not in logs
