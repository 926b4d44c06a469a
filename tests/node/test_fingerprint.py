"""A signaling server that swaps the DTLS fingerprint in the SDP is detected and refused."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.node.conftest import start_inproc

FP = re.compile(r"(a=fingerprint:sha-256 )([0-9A-F:]+)")


def swap(sdp: str) -> str:
    """What a malicious server would do: put another certificate's fingerprint in the SDP."""
    return FP.sub(lambda m: m.group(1) + ":".join(["AB"] * 32), sdp)


@pytest.fixture
async def mitm(server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A WebSocket proxy in front of the real server that rewrites offers."""

    async def ws_proxy(request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as up:

            async def down() -> None:
                async for msg in up:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if data.get("type") == "offer":
                            data["sdp"] = swap(data["sdp"])
                        await client.send_str(json.dumps(data))
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await client.send_bytes(msg.data)

            task = asyncio.ensure_future(down())
            async for msg in client:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await up.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await up.send_bytes(msg.data)
            task.cancel()
        return client

    app = web.Application()
    app.router.add_get("/ws", ws_proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_swapped_fingerprint_is_refused(server, mitm) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s1", "patient")), "patient")
    token = server.mint("s1", "clinician")
    clinician = await start_inproc(f"{mitm}/join#token={token}", "clinician")
    try:
        # the clinician saw a swapped fingerprint in the offer and says so in its signed
        # HS_REPLY; the patient knows its own certificate and refuses the session
        closed = await patient.w.wait_for("session-closed")
        assert "fingerprint" in closed["reason"]
        rej = patient.w.of("rejected", kind="crypto")
        assert rej and rej[0]["reason"] == "fingerprint"
        assert patient.w.of("fingerprint-mismatch")
        assert patient.w.of("error", code="handshake")
        assert not clinician.w.of("handshake") and not patient.w.of("handshake")
        assert not clinician.w.of("message")
        assert not patient.w.of("sent")
    finally:
        await clinician.stop()
        await patient.stop()
