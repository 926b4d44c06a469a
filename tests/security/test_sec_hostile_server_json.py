"""A hostile (or broken) signaling server cannot end the node's signaling: deep JSON, non-JSON,
wrong types, huge messages and binary garbage are each rejected and counted, and the node
goes on (reconnecting where the connection had to drop) and still works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import WSMsgType, web

from tests.node.conftest import start_inproc

CLINICIAN = "c" + "1" * 16

HOSTILE_TEXT = [
    "[" * 30_000 + "]" * 30_000,  # RecursionError in json.loads
    '{"type":"peer-joined","x":' + "[" * 30_000 + "]" * 30_000 + "}",
    '{"type":"peer-joined","endpoint_id":' + "[" * 40 + "]" * 40 + "}",  # deeper than allowed
    "not json at all",
    "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "123",
    "[]",
    '"joined"',
    "{}",
    '{"type":42}',
    '{"type":"reconnect","after_ms":"soon"}',
    '{"type":"reconnect","after_ms":{"a":1}}',
    '{"type":"backpressure","to":{"x":1},"paused":true}',
    '{"type":"peer-joined","endpoint_id":5,"role":[1,2]}',
    '{"type":"peer-joined","endpoint_id":{"a":"b"},"role":"clinician"}',
    '{"type":"joined","peers":"x","waiting":"no"}',
    '{"type":"joined","peers":[1,"a",null,{"endpoint_id":[],"role":{}}]}',
    '{"type":"offer","from":"' + CLINICIAN + '","sdp":["x"]}',
    '{"type":"answer","from":7,"sdp":null}',
    '{"type":"candidate","from":"' + CLINICIAN + '","candidate":"x"}',
    '{"type":"error","code":{"x":1},"message":[1]}',
    '{"type":"peer-left","endpoint_id":null}',
    '{"type":"resume-token","resume_token":["x"]}',
]
HOSTILE_BINARY = [b"", b"\x00", b"\xff" * 10, b"\x05ab", b"\x03\xff\xfe\xfdframe", b"\x00" * 70_000]


class HostileServer:
    """Connection 1: joined, then every hostile message, then a 2 MiB message (more than the
    node accepts, so the connection drops). Connection 2: an honest session."""

    def __init__(self) -> None:
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.got_offer = asyncio.Event()

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        self.connections += 1
        conn = self.connections
        join = await ws.receive_json()
        joined = {
            "type": "joined",
            "role": "patient",
            "session": "hostile",
            "endpoint_id": join["endpoint_id"],
            "peers": [],
        }
        await ws.send_json(joined)
        if conn == 1:
            for text in HOSTILE_TEXT:
                await ws.send_str(text)
            for data in HOSTILE_BINARY:
                await ws.send_bytes(data)
            await ws.send_str('{"type":"x","pad":"' + "a" * (2 * 1024 * 1024) + '"}')
        else:
            await ws.send_json(
                {"type": "peer-joined", "endpoint_id": CLINICIAN, "role": "clinician"}
            )
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.received.append(data)
                if data.get("type") == "offer" and data.get("to") == CLINICIAN:
                    self.got_offer.set()
        return ws


@asynccontextmanager
async def hostile_server() -> AsyncIterator[tuple[HostileServer, str]]:
    hs = HostileServer()
    app = web.Application()
    app.router.add_get("/ws", hs.ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hs, f"http://127.0.0.1:{port}/join#token=anything"
    finally:
        await runner.cleanup()


async def test_node_survives_a_hostile_server_and_still_works() -> None:
    async with hostile_server() as (hs, url):
        patient = await start_inproc(url, "patient")
        try:
            # the honest second connection: the node treats the new clinician as a peer and
            # sends its offer through signaling, so signaling works both ways after the abuse
            await asyncio.wait_for(hs.got_offer.wait(), 60)
            assert hs.connections == 2
            node = patient.node
            rejected = node.rejected
            assert rejected["signal/depth"] >= 3
            assert rejected["signal/json"] >= 2
            assert rejected["signal/type"] >= 5
            assert rejected["signal/field"] >= 3
            assert rejected["signal/envelope"] >= 5
            assert rejected["signal/size"] == 1
            events = patient.w.of("rejected", kind="signal")
            assert {e["reason"] for e in events} >= {"depth", "json", "type", "size", "envelope"}
            # the status command (and --json) shows the counters
            node.command({"cmd": "status"})
            status = await patient.w.wait_for("status")
            assert status["rejected"]["signal/depth"] >= 3
            assert not patient.w.of("error", code="internal")
            assert node._sig_task is not None and not node._sig_task.done()
            assert patient.w.of("signaling", state="up")
        finally:
            await patient.stop()


async def test_handler_exception_does_not_end_signaling() -> None:
    """Even an exception type nobody foresaw, raised while handling a message, is counted and
    the connection goes on."""
    async with hostile_server() as (hs, url):
        patient = await start_inproc(url, "patient")
        try:
            original = patient.node._on_signal
            calls = 0

            def exploding(msg: dict[str, Any]) -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RecursionError("boom")
                original(msg)

            patient.node.signaling._on_message = exploding
            await asyncio.wait_for(hs.got_offer.wait(), 60)
            assert patient.node.rejected.get("signal/handler", 0) >= 1
        finally:
            await patient.stop()
