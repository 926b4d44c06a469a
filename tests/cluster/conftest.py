from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.redisproc import RedisProcess, redis_process, write_key


@pytest.fixture
async def redis_srv(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with redis_process(tmp_path) as r:
        yield r


@pytest.fixture
def shared_key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "cluster-token-key")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
