from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.testing import RunningServer, running_server

RECV_TIMEOUT = 10.0  # generous: only guards against a hang, never asserts timing


class Client:
    """A real aiohttp WebSocket client speaking the signaling protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected text, got {msg.type} {msg.data!r}"
        return json.loads(msg.data)  # type: ignore[no-any-return]

    async def recv_type(self, type_: str) -> dict[str, Any]:
        """Next message of this type; others are skipped (they are checked elsewhere)."""
        while True:
            m = await self.recv()
            if m["type"] == type_:
                return m

    async def recv_bytes(self) -> bytes:
        while True:
            msg = await self.ws.receive(timeout=RECV_TIMEOUT)
            if msg.type == aiohttp.WSMsgType.BINARY:
                return msg.data  # type: ignore[no-any-return]
            assert msg.type == aiohttp.WSMsgType.TEXT, f"got {msg.type}"

    async def closed(self) -> tuple[int | None, list[dict[str, Any]]]:
        """Read until the server closes; return the close code and the text messages seen."""
        seen: list[dict[str, Any]] = []
        while True:
            msg = await self.ws.receive(timeout=RECV_TIMEOUT)
            if msg.type == aiohttp.WSMsgType.TEXT:
                seen.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data), seen  # the code the server sent
            elif msg.type == aiohttp.WSMsgType.CLOSED or msg.type == aiohttp.WSMsgType.ERROR:
                return self.ws.close_code, seen


class Harness:
    def __init__(self, srv: RunningServer, http: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.http = http

    async def connect(self, **kw: Any) -> Client:
        return Client(await self.http.ws_connect(self.srv.ws_url, **kw))

    async def join(
        self, session: str, role: str, endpoint_id: str, token: str | None = None
    ) -> tuple[Client, dict[str, Any]]:
        c = await self.connect()
        await c.send(
            type="join", token=token or self.srv.mint(session, role), endpoint_id=endpoint_id
        )
        return c, await c.recv_type("joined")

    async def consult(
        self, session: str = "s1", clinicians: int = 1
    ) -> tuple[Client, list[Client]]:
        """A patient admitted by the first of `clinicians` clinicians; initial events drained."""
        pat, _ = await self.join(session, "patient", "pat")
        docs = []
        for i in range(clinicians):
            doc, _ = await self.join(session, "clinician", f"doc{i}")
            docs.append(doc)
        await docs[0].recv_type("peer-waiting")
        await docs[0].send(type="admit", endpoint_id="pat")
        await pat.recv_type("admitted")
        for _ in docs:
            await pat.recv_type("peer-joined")
        for d in docs:
            await d.recv_type("peer-joined")
        return pat, docs


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", metrics_port=0) as s:
        yield s


@pytest.fixture
async def h(srv: RunningServer, http: aiohttp.ClientSession) -> Harness:
    return Harness(srv, http)


async def settle(cond: Any, limit: float = 10.0) -> None:
    """Wait until cond() is true (bounded); for state the server updates asynchronously."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        assert loop.time() < end, "condition never became true"
        await asyncio.sleep(0.01)
