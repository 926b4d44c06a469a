"""Start a real signaling server on loopback from tests or other code.

    async with running_server(tmp_path, idle_timeout=2.0) as srv:
        token = srv.mint("s1", "patient")
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_json({"type": "join", "token": token, "endpoint_id": "pat-1"})

Keyword arguments are Config fields (limits=Limits(...) included); port 0 picks a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from signaling.config import Config
from signaling.hub import Hub
from signaling.keys import load_secret
from signaling.listen import bind
from signaling.metrics import Metrics
from signaling.server import (
    CONFIG,
    HUB,
    METRICS,
    create_app,
    ssl_context,
    start_metrics_site,
    start_site,
)
from signaling.tokens import REVOCATIONS, RevocationStore, mint, token_key


@dataclasses.dataclass
class RunningServer:
    url: str  # e.g. http://127.0.0.1:41234 (https when TLS is configured)
    ws_url: str  # {url}/ws with ws:// or wss://
    app: web.Application
    config: Config
    metrics_url: str | None = None  # http://127.0.0.1:PORT when metrics_port was given

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    @property
    def metrics(self) -> Metrics:
        return self.app[METRICS]

    def mint(self, session: str, role: str, ttl: float = 600.0, **kw: Any) -> str:
        cfg = self.config
        key = load_secret(cfg.token_key) if cfg.token_key else token_key(cfg.data_dir, create=False)
        token, _ = mint(
            key,
            session=session,
            role=role,
            ttl=ttl,
            issuer=self.config.issuer,
            audience=self.config.audience,
            **kw,
        )
        return token

    def join_url(self, token: str) -> str:
        return f"{self.url}/join#token={token}"

    def revoke(self, jti: str) -> None:
        store = RevocationStore(self.config.data_dir / REVOCATIONS)
        try:
            store.revoke(jti)
        finally:
            store.close()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.asynccontextmanager
async def running_server(
    data_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, **config: Any
) -> AsyncIterator[RunningServer]:
    cfg = Config(data_dir=Path(data_dir), host=host, port=port, **config)
    ctx = ssl_context(cfg)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    cfg.port = bound
    app = create_app(cfg)
    msock = None if cfg.metrics_port is None else bind(cfg.metrics_host, cfg.metrics_port)
    metrics_url = None
    if msock is not None:
        cfg.metrics_port = msock.getsockname()[1]
        metrics_url = f"http://{cfg.metrics_host}:{cfg.metrics_port}"
    try:
        runner = await start_site(app, cfg, sock, ctx)
    except BaseException:
        sock.close()
        if msock is not None:
            msock.close()
        raise
    mrunner = None
    try:
        if msock is not None:
            mrunner = await start_metrics_site(app, cfg, msock)
        scheme = "https" if ctx else "http"
        url = f"{scheme}://{host}:{bound}"
        ws_url = f"{'wss' if ctx else 'ws'}://{host}:{bound}/ws"
        yield RunningServer(url, ws_url, app, cfg, metrics_url)
    finally:
        if mrunner is not None:
            await mrunner.cleanup()
        await runner.cleanup()


__all__ = ["CONFIG", "RunningServer", "ServerProcess", "running_server", "server_process"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class ServerProcess:
    """`p2pmed signaling` in its own process; stderr (the JSON log) goes to `log_path`."""

    proc: asyncio.subprocess.Process
    url: str
    ws_url: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def start_process(
    data_dir: Path,
    *args: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
) -> tuple[asyncio.subprocess.Process, Path, int]:
    """Start `p2pmed signaling` (stdin /dev/null, as under systemd); do not wait for it.
    `nofile` sets its file descriptor limit (soft and hard), as `ulimit -n` would."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    port = free_port() if port is None else port
    log_path = data_dir.parent / f"server-{port}-{os.urandom(3).hex()}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("P2PMED_")}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "p2pmed",
            "signaling",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**clean, **(env or {})},
            preexec_fn=limit if nofile is not None else None,
        )
    return proc, log_path, port


@contextlib.asynccontextmanager
async def server_process(
    data_dir: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    nofile: int | None = None,
) -> AsyncIterator[ServerProcess]:
    """A server process, ready (healthz 200) on a free loopback port; killed on exit if still
    running. Raises RuntimeError with its log if it exits or is not ready within `timeout`."""
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    proc, log_path, port = await start_process(data_dir, *args, env=env, nofile=nofile)
    url = f"http://127.0.0.1:{port}"
    srv = ServerProcess(proc, url, f"ws://127.0.0.1:{port}/ws", data_dir, log_path)
    try:
        await _wait_ready(srv, timeout)
        yield srv
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _wait_ready(srv: ServerProcess, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if srv.proc.returncode is not None:
                raise RuntimeError(f"server exited {srv.proc.returncode}: {srv.log()}")
            if loop.time() > end:
                raise RuntimeError(f"server not ready in {timeout} s: {srv.log()}")
            try:
                async with http.get(srv.url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
