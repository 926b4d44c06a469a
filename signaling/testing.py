"""Start a real signaling server on loopback from tests or other code.

    async with running_server(tmp_path, idle_timeout=2.0) as srv:
        token = srv.mint("s1", "patient")
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_json({"type": "join", "token": token, "endpoint_id": "pat-1"})

Keyword arguments are Config fields (limits=Limits(...) included); port 0 picks a free port.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling.config import Config
from signaling.hub import Hub
from signaling.metrics import Metrics
from signaling.server import CONFIG, HUB, METRICS, create_app, ssl_context
from signaling.tokens import REVOCATIONS, RevocationStore, mint, token_key


@dataclasses.dataclass
class RunningServer:
    url: str  # e.g. http://127.0.0.1:41234 (https when TLS is configured)
    ws_url: str  # {url}/ws with ws:// or wss://
    app: web.Application
    config: Config

    @property
    def hub(self) -> Hub:
        return self.app[HUB]

    @property
    def metrics(self) -> Metrics:
        return self.app[METRICS]

    def mint(self, session: str, role: str, ttl: float = 600.0, **kw: Any) -> str:
        key = token_key(self.config.data_dir, create=False)
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
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    ctx = ssl_context(cfg)
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    await site.start()
    try:
        bound = runner.addresses[0][1]
        cfg.port = bound
        scheme = "https" if ctx else "http"
        url = f"{scheme}://{host}:{bound}"
        ws_url = f"{'wss' if ctx else 'ws'}://{host}:{bound}/ws"
        yield RunningServer(url, ws_url, app, cfg)
    finally:
        await runner.cleanup()


__all__ = ["CONFIG", "RunningServer", "running_server"]
