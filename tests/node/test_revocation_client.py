"""The signaling client treats a revocation as final: after `error token-revoked`, or a bare
close 4410 whose error message was lost, it reports token-revoked once and never reconnects
(before issue #16.1 it reconnected, was refused twice and then sat idle while its direct
paths carried on)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from p2pmed.signaling_client import JoinUrl, SignalingClient


async def _server(send_error: bool) -> tuple[web.AppRunner, str, list[int]]:
    connects: list[int] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        connects.append(1)
        msg = await sock.receive()
        assert json.loads(msg.data)["type"] == "join"
        await sock.send_json({"type": "joined", "session": "s1", "role": "clinician"})
        if send_error:
            await sock.send_json({"type": "error", "code": "token-revoked", "message": "x"})
        await sock.close(code=4410, message=b"token-revoked")
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", connects


@pytest.mark.parametrize("send_error", [True, False], ids=["error", "bare-4410"])
async def test_revocation_is_final(send_error: bool) -> None:
    runner, url, connects = await _server(send_error)
    got: list[dict[str, Any]] = []
    revoked = asyncio.Event()

    def on_message(m: dict[str, Any]) -> None:
        got.append(m)
        if m.get("code") == "token-revoked":
            revoked.set()

    client = SignalingClient(
        JoinUrl(url, "t"), "doc1", on_message=on_message, on_relay=lambda *a: None,
        on_state=lambda up: None, max_backoff=0.05,
    )  # fmt: skip
    task = asyncio.ensure_future(client.run())
    try:
        await asyncio.wait_for(revoked.wait(), 10)
        await asyncio.wait_for(task, 10)  # run() ends by itself: no reconnect loop
        assert client.revoked
        assert len(connects) == 1
        assert [m["code"] for m in got if m.get("type") == "error"] == ["token-revoked"]
    finally:
        task.cancel()
        await client.close()
        await runner.cleanup()
