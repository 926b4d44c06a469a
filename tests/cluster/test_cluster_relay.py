"""Relay frames between endpoints held by different servers (issue #15, item 2), over a
real Redis: byte-identical, in order, none lost; a slow receiver on B slows the sender on A."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import aiohttp

from signaling.config import Limits
from tests.cluster.redisproc import RedisProcess
from tests.cluster.test_cluster_state import pair
from tests.signaling.conftest import Client, Harness, settle


def envelope(to: str, payload: bytes) -> bytes:
    b = to.encode()
    return bytes((len(b),)) + b + payload


async def consult(ha: Harness, hb: Harness) -> tuple[Client, Client]:
    pat, _ = await ha.join("s1", "patient", "pat")
    doc, _ = await hb.join("s1", "clinician", "doc")
    await doc.recv_type("peer-waiting")
    await doc.send(type="admit", endpoint_id="pat")
    await pat.recv_type("peer-joined")
    await doc.recv_type("peer-joined")
    return pat, doc


async def test_frames_cross_servers_identical_and_in_order(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    async with pair(tmp_path, redis_srv, shared_key) as (a, b):
        pat, doc = await consult(Harness(a, http), Harness(b, http))
        n = 3000
        frames = [struct.pack(">I", i) + os.urandom(252) for i in range(n)]

        async def send(c: Client, to: str) -> None:
            for f in frames:
                await c.ws.send_bytes(envelope(to, f))

        sender = asyncio.create_task(send(pat, "doc"))
        for f in frames:
            assert await doc.recv_bytes() == envelope("pat", f)
        await sender
        # and back, B to A
        sender = asyncio.create_task(send(doc, "pat"))
        for f in frames:
            assert await pat.recv_bytes() == envelope("doc", f)
        await sender
        assert a.hub.remote is not None and b.hub.remote is not None
        assert a.hub.remote.sent == n and b.hub.remote.received == n
        assert b.hub.remote.sent == n and a.hub.remote.received == n
        for srv in (a, b):
            assert srv.metric("p2pmed_relay_rejected_total", reason="remote-gone") == 0


async def test_slow_receiver_on_other_server_holds_sender(
    tmp_path: Path, redis_srv: RedisProcess, shared_key: Path, http: aiohttp.ClientSession
) -> None:
    limits = Limits(queue_frames=8, queue_bytes=1 << 20)
    async with pair(tmp_path, redis_srv, shared_key, limits=limits) as (a, b):
        pat, doc = await consult(Harness(a, http), Harness(b, http))
        n = 2000
        frames = [struct.pack(">I", i) + os.urandom(4000) for i in range(n)]
        paused: list[bool] = []

        async def send_all() -> None:
            for f in frames:
                await pat.ws.send_bytes(envelope("doc", f))

        async def watch_sender() -> None:
            while True:
                m = await pat.recv()
                if m["type"] == "backpressure":
                    assert m["to"] == "doc"
                    paused.append(m["paused"])

        sender = asyncio.create_task(send_all())
        watcher = asyncio.create_task(watch_sender())
        # doc (on B) does not read: B's queue fills, credits stop, A pauses the sender
        await settle(lambda: True in paused, limit=30)
        assert a.metric("p2pmed_relay_backpressure_total") >= 1
        assert a.metric("p2pmed_relay_frames_total") < n
        for f in frames:
            assert await doc.recv_bytes() == envelope("pat", f)
        await asyncio.wait_for(sender, 30)
        await settle(lambda: paused[-1] is False)
        watcher.cancel()
        assert paused == [True, False] * (len(paused) // 2)
        assert a.metric("p2pmed_relay_frames_total") == n
        for name in ("relay-credit-lost", "bus-undeliverable"):
            assert a.metric("p2pmed_signaling_errors_total", code=name) == 0
