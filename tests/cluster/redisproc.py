"""A real redis-server for tests (and the cluster benchmark): free port, temp dir, no disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from signaling.testing import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisProcess:
    proc: asyncio.subprocess.Process | None
    port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        r = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(400):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited {self.proc.returncode}")
                try:
                    await r.ping()
                    return
                except (OSError, aioredis.ConnectionError):
                    await asyncio.sleep(0.025)
            raise RuntimeError("redis-server not ready in 10 s")
        finally:
            await r.aclose()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


@contextlib.asynccontextmanager
async def redis_process(tmp: Path) -> AsyncIterator[RedisProcess]:
    d = tmp / f"redis-{secrets.token_hex(3)}"
    d.mkdir(parents=True)
    rp = RedisProcess(None, free_port(), d)
    await rp.start()
    try:
        yield rp
    finally:
        await rp.stop()


def write_key(path: Path) -> Path:
    """A shared token key file as `p2pmed signaling --token-key` reads it (hex, 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_bytes(32).hex() + "\n")
    return path
