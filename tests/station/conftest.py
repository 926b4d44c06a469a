"""Ward tests: a real signaling server on loopback and real WebSocket clients; the node tests
reuse tests/node/conftest.py's helpers (real node processes, stdin /dev/null)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.testing import RunningServer, running_server
from tests.node.conftest import server  # noqa: F401  (fixture)

RECV_TIMEOUT = 10.0  # guards against a hang only


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected text, got {msg.type} {msg.data!r}"
        return json.loads(msg.data)  # type: ignore[no-any-return]

    async def recv_type(self, type_: str, **match: Any) -> dict[str, Any]:
        while True:
            m = await self.recv()
            if m["type"] == type_ and all(m.get(k) == v for k, v in match.items()):
                return m

    async def refused(self) -> tuple[str, int | None]:
        """The error code and close code of a refused join."""
        err = await self.recv_type("error")
        msg = await self.ws.receive(timeout=RECV_TIMEOUT)
        code = int(msg.data) if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
        return str(err["code"]), code


class Ward:
    def __init__(self, srv: RunningServer, http: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.http = http

    async def join(self, token: str, endpoint_id: str) -> Client:
        c = Client(await self.http.ws_connect(self.srv.ws_url))
        await c.send(type="join", token=token, endpoint_id=endpoint_id)
        return c

    def bed(self, ward: str, bed: str) -> str:
        return self.srv.mint(bed, "patient", ward=ward)

    def station(self, ward: str, **kw: Any) -> str:
        return self.srv.mint(f"ward.{ward}", "station", ward=ward, **kw)


@pytest.fixture
async def wsrv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data") as s:
        yield s


@pytest.fixture
async def ward(wsrv: RunningServer) -> AsyncIterator[Ward]:
    async with aiohttp.ClientSession() as http:
        yield Ward(wsrv, http)
