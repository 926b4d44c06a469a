"""A signaling server that swaps the DTLS fingerprint in the SDP gets no direct path."""

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


async def test_swapped_fingerprint_never_gives_a_direct_path(server, mitm) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s1", "patient")), "patient")
    token = server.mint("s1", "clinician")
    clinician = await start_inproc(f"{mitm}/join#token={token}", "clinician")
    try:
        # the E2E handshake does not depend on SDP: it completes over the relay and the
        # vitals flow there; DTLS itself refuses the certificate that does not match the
        # swapped fingerprint, so no direct path ever opens or binds
        await patient.w.wait_for("handshake")
        await clinician.w.wait_count("message", 5)
        await patient.w.wait_for("direct-failed")
        assert not patient.w.of("direct-open") and not clinician.w.of("direct-open")
        assert not patient.w.of("direct-bound") and not clinician.w.of("direct-bound")
        assert {m["path"] for m in clinician.w.of("message")} == {"relay"}
    finally:
        await clinician.stop()
        await patient.stop()
