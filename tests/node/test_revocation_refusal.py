"""After `peer-revoked` the patient takes nothing from that endpoint (no link on
`peer-reconnected` or a `joined` list, no relay frames; each counted) until the server
announces it as a new join (`peer-joined`), and confirms with `revocation-done`. A scripted
server on loopback plays the signaling side."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web

from tests.node.conftest import start_inproc

DOC = "doc" + "1" * 13


class ScriptedServer:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.ws: web.WebSocketResponse | None = None
        self.ready = asyncio.Event()
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue  # relay frames (the patient starts its handshake on the relay)
            data = json.loads(msg.data)
            if data["type"] == "join":
                await ws.send_json(
                    {
                        "type": "joined", "session": "s1", "role": "patient",
                        "endpoint_id": data["endpoint_id"], "waiting": False,
                        "peers": [{"endpoint_id": DOC, "role": "clinician", "admitted": True}],
                    }
                )  # fmt: skip
                self.ready.set()
            else:
                self.received.append(data)
                self.got.set()
        return ws

    async def wait(self, kind: str) -> dict[str, Any]:
        while True:
            for m in self.received:
                if m["type"] == kind:
                    return m
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), 30)


async def _no_turn(request: web.Request) -> web.Response:
    return web.json_response({"iceServers": []})


async def test_revoked_peer_refused_until_a_new_join() -> None:
    srv = ScriptedServer()
    app = web.Application()
    app.router.add_get("/ws", srv.handle)
    app.router.add_get("/turn-credentials", _no_turn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/join#token=t"
    patient = await start_inproc(url, "patient")
    try:
        await srv.ready.wait()
        await patient.w.wait_for("peer", peer=DOC, state="present")
        await srv.wait("offer")  # the patient is negotiating with the clinician
        assert srv.ws is not None
        await srv.ws.send_json({"type": "peer-revoked", "endpoint_id": DOC})
        done = await srv.wait("revocation-done")
        assert done == {"type": "revocation-done", "endpoint_id": DOC}
        assert DOC not in patient.node.peers
        await patient.w.wait_for("revocation-done", peer=DOC)
        mark = len(patient.w.events)
        # neither a takeover nor a stale peers list brings it back; its relay frames are dropped
        await srv.ws.send_json({"type": "peer-reconnected", "endpoint_id": DOC})
        await srv.ws.send_bytes(bytes([len(DOC)]) + DOC.encode() + b"\x01\x02\x03\x04")
        await srv.ws.send_json({"type": "ping-probe"})  # unknown: ignored, marks the end
        rejected = patient.node.rejected
        for _ in range(300):
            if rejected.get("relay/revoked-peer") and rejected.get("signal/revoked-peer"):
                break
            await asyncio.sleep(0.01)
        assert rejected.get("signal/revoked-peer") == 1
        assert rejected.get("relay/revoked-peer") == 1
        assert DOC not in patient.node.peers
        assert not patient.w.of("peer", peer=DOC, state="present")[1:]
        # a new join with a valid token: accepted again
        await srv.ws.send_json({"type": "peer-joined", "endpoint_id": DOC, "role": "clinician"})
        await patient.w.wait_for("peer", peer=DOC, state="present", after=mark)
        assert DOC in patient.node.peers
    finally:
        await patient.stop()
        await runner.cleanup()
