"""Limits: each violation gets a clear close code and a metric, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from signaling.config import Limits
from signaling.testing import running_server
from tests.signaling.conftest import Harness, settle


async def test_message_too_big(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(max_msg_size=4096)) as srv:
        h = Harness(srv, http)
        doc, _ = await h.join("s1", "clinician", "doc")
        await doc.ws.send_str(json.dumps({"type": "offer", "to": "x", "sdp": "v" * 5000}))
        code, _ = await doc.closed()
        assert code == 1009
        await settle(lambda: srv.metric("p2pmed_limit_violations_total", limit="message-size") == 1)
        await h.join("s1", "clinician", "doc2")  # still serving


async def test_message_rate(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(msg_rate=1, msg_burst=5)) as srv:
        doc, _ = await Harness(srv, http).join("s1", "clinician", "doc")
        for _ in range(10):
            await doc.send(type="audit", event="alarm-ack", alarm_id="a1")
        code, seen = await doc.closed()
        assert code == 4429 and seen[-1]["code"] == "rate-limited"
        assert srv.metric("p2pmed_limit_violations_total", limit="message-rate") == 1


async def test_relay_rate(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(relay_rate=1, relay_burst=5)) as srv:
        pat, (_doc,) = await Harness(srv, http).consult()
        for _ in range(10):
            await pat.ws.send_bytes(b"\x04doc0" + b"x" * 60)
        code, seen = await pat.closed()
        assert code == 4429 and seen[-1]["code"] == "rate-limited"
        assert srv.metric("p2pmed_limit_violations_total", limit="relay-rate") == 1


async def test_endpoints_per_session(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(max_endpoints_per_session=2)) as srv:
        h = Harness(srv, http)
        await h.join("s1", "clinician", "a")
        await h.join("s1", "clinician", "b")
        c = await h.connect()
        await c.send(type="join", token=srv.mint("s1", "observer"), endpoint_id="c")
        code, seen = await c.closed()
        assert code == 4503 and seen[-1]["code"] == "session-full"
        assert srv.metric("p2pmed_rejected_joins_total", reason="session-full") == 1
        await h.join("s2", "clinician", "a")  # other sessions unaffected


async def test_sessions_per_server(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(max_sessions=1)) as srv:
        h = Harness(srv, http)
        await h.join("s1", "clinician", "a")
        c = await h.connect()
        await c.send(type="join", token=srv.mint("s2", "clinician"), endpoint_id="a")
        code, seen = await c.closed()
        assert code == 4503 and seen[-1]["code"] == "server-full"
        await h.join("s1", "clinician", "b")  # the existing session still accepts


async def test_join_attempts_per_ip(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(join_rate=0.01, join_burst=3)) as srv:
        h = Harness(srv, http)
        for i in range(3):
            await h.join("s1", "clinician", f"d{i}")
        c = await h.connect()
        await c.send(type="join", token=srv.mint("s1", "clinician"), endpoint_id="d9")
        code, seen = await c.closed()
        assert code == 4429 and seen[-1]["code"] == "too-many-joins"
        assert srv.metric("p2pmed_rejected_joins_total", reason="join-rate") == 1


async def test_idle_logoff(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, idle_timeout=0.3) as srv:
        h = Harness(srv, http)
        pat, (doc,) = await h.consult()
        # the patient's user is active (ping); the clinician goes quiet
        left = []
        for i in range(200):
            await pat.send(type="ping", id=i)
            while (m := await pat.recv())["type"] != "pong":
                left.append(m)
            assert m == {"type": "pong", "id": i}
            if left:
                break
            await asyncio.sleep(0.05)
        assert left == [{"type": "peer-left", "endpoint_id": "doc0"}]
        code, seen = await doc.closed()
        assert code == 4408 and seen[-1]["code"] == "idle-timeout"
        assert srv.metric("p2pmed_idle_logoffs_total") == 1
        assert await srv.hub.store.member("s1", "doc0") is None
        audit = (srv.config.data_dir / "audit.jsonl").read_text()
        assert '"event":"logoff"' in audit


async def test_unjoined_connections_per_ip(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, limits=Limits(pending_per_ip=3)) as srv:
        h = Harness(srv, http)
        idle = [await h.connect() for _ in range(3)]
        # refused before the upgrade (the cap counts from accept): plain HTTP 429
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await h.connect()
        assert e.value.status == 429
        assert srv.metric("p2pmed_limit_violations_total", limit="pending-per-ip") == 1
        assert srv.metric("p2pmed_unjoined_connections") == 3
        # joining frees the slot
        await idle[0].send(type="join", token=srv.mint("s1", "clinician"), endpoint_id="a")
        assert (await idle[0].recv())["type"] == "joined"
        doc, _ = await h.join("s1", "clinician", "b")
        assert not doc.ws.closed
        assert srv.metric("p2pmed_unjoined_connections") == 2


async def test_mass_expiry_is_swept_in_bounded_passes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # One pass over thousands of expired endpoints stalled the loop; passes are bounded.
    async with running_server(tmp_path, reconnect_grace=3600) as srv:
        h = Harness(srv, http)
        clients = [(await h.join(f"m{i}", "clinician", "doc"))[0] for i in range(25)]
        for c in clients:
            await c.ws.close()
        hub = srv.hub
        while any(e.ws is not None for e in hub.local.all()):
            await asyncio.sleep(0.01)
        # grace long expired; relative to now, since monotonic() counts from boot and a
        # freshly booted machine has not yet reached the grace (3,600 s)
        expired_at = time.monotonic() - srv.config.reconnect_grace - 1.0
        for e in hub.local.all():
            e.disconnected_at = expired_at
        closes, more = await hub.sweeper.sweep(budget=10)
        assert closes == [] and more
        assert len(hub.local.all()) == 15
        await hub.sweeper.sweep(budget=10)
        closes, more = await hub.sweeper.sweep(budget=10)
        assert not more and hub.store.session_count() == 0
