"""A join token stays bound to its first endpoint after that endpoint leaves and after a
server restart (protocol.md 8.2): real server processes on one data dir."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp

from signaling.config import Config
from signaling.testing import server_process
from signaling.tokens import mint, token_key
from tests.signaling.conftest import Client


def _mint(data: Path, session: str, role: str) -> str:
    cfg = Config(data_dir=data)
    token, _ = mint(
        token_key(data, create=False),
        session=session,
        role=role,
        ttl=600,
        issuer=cfg.issuer,
        audience=cfg.audience,
    )
    return token


async def _join(http: aiohttp.ClientSession, ws_url: str, token: str, eid: str) -> Client:
    c = Client(await http.ws_connect(ws_url))
    await c.send(type="join", token=token, endpoint_id=eid)
    return c


async def _refused(c: Client) -> str:
    code, seen = await c.closed()
    assert code == 4401, (code, seen)
    return str(seen[-1]["code"])


async def test_token_binding_survives_leave_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with aiohttp.ClientSession() as http:
        async with server_process(data) as srv:
            token = _mint(data, "s1", "clinician")
            a = await _join(http, srv.ws_url, token, "doc-a")
            assert (await a.recv_type("joined"))["endpoint_id"] == "doc-a"
            await a.send(type="leave")
            assert (await a.closed())[0] == 1000
            # the endpoint left: the token is still its, not free for another endpoint
            b = await _join(http, srv.ws_url, token, "doc-b")
            assert await _refused(b) == "token-in-use"
            assert await srv.stop() == 0
        mode = (data / "bindings.sqlite").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        async with server_process(data) as srv:
            b = await _join(http, srv.ws_url, token, "doc-b")
            assert await _refused(b) == "token-in-use"
            # the endpoint it is bound to may rejoin with it, after the restart too
            a = await _join(http, srv.ws_url, token, "doc-a")
            assert (await a.recv_type("joined"))["endpoint_id"] == "doc-a"
            # a second token is unaffected and binds to its own endpoint
            other = _mint(data, "s1", "clinician")
            b = await _join(http, srv.ws_url, other, "doc-b")
            assert (await b.recv_type("joined"))["endpoint_id"] == "doc-b"
            assert await srv.stop() == 0
        assert '"reason":"token-in-use"' in (data / "audit.jsonl").read_text()
