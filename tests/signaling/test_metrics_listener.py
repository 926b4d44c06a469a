"""/metrics is served only on its own listener (--metrics-host/--metrics-port), never on the
public port, so a firewall can restrict it; /healthz answers on both."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from signaling.testing import free_port, running_server, server_process, start_process


async def test_public_port_has_no_metrics(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path / "data") as srv:
        assert srv.metrics_url is None
        async with http.get(srv.url + "/metrics") as r:
            assert r.status == 404
        async with http.get(srv.url + "/healthz") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok", "sessions": 0, "endpoints": 0}


async def test_metrics_listener_serves_metrics_and_healthz_only(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path / "data", metrics_port=0) as srv:
        assert srv.metrics_url is not None and srv.metrics_url != srv.url
        async with http.get(srv.metrics_url + "/metrics") as r:
            assert r.status == 200 and r.content_type == "text/plain"
            assert "p2pmed_sessions 0.0" in await r.text()
        async with http.get(srv.metrics_url + "/healthz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        for path in ("/ws", "/join", "/turn-credentials", "/static/app.js"):
            async with http.get(srv.metrics_url + path) as r:
                assert r.status == 404, path
        async with http.get(srv.url + "/metrics") as r:
            assert r.status == 404


async def test_process_metrics_port_flag_and_env(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for i, how in enumerate(("flag", "env")):
            mport = free_port()
            args = ("--metrics-port", str(mport)) if how == "flag" else ()
            env = {"P2PMED_METRICS_PORT": str(mport)} if how == "env" else {}
            async with server_process(tmp_path / f"d{i}", *args, env=env) as srv:
                async with http.get(f"http://127.0.0.1:{mport}/metrics") as r:
                    assert r.status == 200, how
                    assert "p2pmed_audit_head_seq" in await r.text()
                async with http.get(srv.url + "/metrics") as r:
                    assert r.status == 404, how
                assert await srv.stop() == 0
            assert f'"metrics":"127.0.0.1:{mport}"' in srv.log()  # the start log says where


async def test_metrics_port_in_use_stops_before_start(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        data = tmp_path / "data"
        proc, log, _ = await start_process(data, "--metrics-port", str(busy))
        assert await proc.wait() == 2
    text = log.read_text()
    assert f"metrics listener: port {busy} on 127.0.0.1 is already in use" in text
    audit = data / "audit.jsonl"
    assert not audit.exists() or '"start"' not in audit.read_text()
