"""A real HAProxy (Debian's haproxy) running deploy/haproxy.cfg in front of test servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from signaling.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = ROOT / "deploy" / "haproxy.cfg"


@contextlib.asynccontextmanager
async def haproxy(servers: list[str], log: Path) -> AsyncIterator[str]:
    """HAProxy on a free loopback port in front of `servers` (host:port, 1 to 3; the config
    has three slots, the last one repeats). Yields its base URL once a request through it
    reaches a server."""
    port = free_port()
    slots = [*servers, *[servers[-1]] * (3 - len(servers))]
    env = {
        **os.environ,
        "P2PMED_LB_BIND": f"127.0.0.1:{port}",
        **{f"P2PMED_SIG{i + 1}": s for i, s in enumerate(slots)},
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            HAPROXY,
            "-db",
            "-f",
            str(CONFIG),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                if proc.returncode is not None:
                    raise RuntimeError(f"haproxy exited {proc.returncode}: {log.read_text()}")
                try:
                    async with http.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"haproxy not ready: {log.read_text()}")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
