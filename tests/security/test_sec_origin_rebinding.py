"""The WebSocket Origin check compares with configured public origins, never with the
request's own Host header (a DNS-rebinding page sends a matching Host)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from signaling.origins import default_origins, normalize
from signaling.testing import RunningServer, running_server, server_process
from tests.signaling.test_cli import cli


async def _status(http: aiohttp.ClientSession, ws_url: str, **kw: object) -> int:
    try:
        ws = await http.ws_connect(ws_url, **kw)  # type: ignore[arg-type]
    except aiohttp.WSServerHandshakeError as e:
        return e.status
    await ws.close()
    return 101


async def test_dns_rebinding_request_is_refused(
    srv: RunningServer, http: aiohttp.ClientSession
) -> None:
    port = srv.config.port
    evil = f"evil.example:{port}"
    status = await _status(http, srv.ws_url, headers={"Host": evil}, origin=f"http://{evil}")
    assert status == 403
    assert srv.metric("p2pmed_rejected_joins_total", reason="origin") == 1
    # the default (loopback bind) allows the server's loopback origins only
    for ok in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
        assert await _status(http, srv.ws_url, origin=ok) == 101, ok
    for bad in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "null"):
        assert await _status(http, srv.ws_url, origin=bad) == 403, bad
    assert srv.metric("p2pmed_rejected_joins_total", reason="origin") == 4


async def test_configured_public_origin_only(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    public = ["https://telemed.example.org:443/", "https://Other.example:8443"]
    async with running_server(tmp_path, public_origins=public) as srv:
        port = srv.config.port
        for ok in ("https://telemed.example.org", "https://other.example:8443"):
            assert await _status(http, srv.ws_url, origin=ok) == 101, ok
        # configured origins replace the default
        assert await _status(http, srv.ws_url, origin=f"http://127.0.0.1:{port}") == 403
        host = {"Host": "telemed.example.org"}
        assert await _status(http, srv.ws_url, headers=host, origin="http://x.example") == 403


def test_default_origins() -> None:
    assert default_origins("127.0.0.1", 8443, False) == [
        "http://127.0.0.1:8443",
        "http://[::1]:8443",
        "http://localhost:8443",
    ]
    assert "https://localhost" in default_origins("0.0.0.0", 443, True)
    assert default_origins("192.0.2.7", 8443, True) == ["https://192.0.2.7:8443"]
    assert normalize("HTTP://Example.ORG:80/") == "http://example.org"
    for bad in ("example.org", "ftp://x", "https://x/path", "https://x:99999", "null"):
        with pytest.raises(ValueError):
            normalize(bad)


async def test_public_origin_option_and_env(tmp_path: Path) -> None:
    r = cli("signaling", "--port", "0", "--data-dir", str(tmp_path), "--public-origin", "x.org")
    assert r.returncode == 2 and "not an http(s) origin" in r.stderr, r.stderr
    async with aiohttp.ClientSession() as http:
        args = ("--public-origin", "https://a.example", "--public-origin", "https://b.example")
        async with server_process(tmp_path / "d1", *args) as srv:
            assert await _status(http, srv.ws_url, origin="https://a.example") == 101
            assert await _status(http, srv.ws_url, origin="https://b.example") == 101
            assert await _status(http, srv.ws_url, origin=srv.url) == 403
        env = {"P2PMED_PUBLIC_ORIGIN": "https://c.example,https://d.example:8443"}
        async with server_process(tmp_path / "d2", env=env) as srv:
            assert await _status(http, srv.ws_url, origin="https://d.example:8443") == 101
            assert await _status(http, srv.ws_url, origin="https://a.example") == 403
