"""The data dir is 0700 and every file in it 0600, whether the server made them or found
them (a dir made by hand with 0755, a revocations.sqlite left 0644 by an older version)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from signaling.testing import running_server, server_process
from tests.signaling.conftest import Harness
from tests.signaling.test_cli import cli


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # a usual login umask: files 0644 unless created otherwise
    try:
        yield
    finally:
        os.umask(old)


def modes(d: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in d.iterdir()}


async def test_fresh_data_dir_is_private(
    tmp_path: Path, http: aiohttp.ClientSession, umask_022: None
) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        await Harness(srv, http).consult()
        srv.revoke("x")
        running = modes(data)  # SQLite's -wal/-shm exist only while it runs
    stopped = modes(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {"revocations.sqlite-wal", "bindings.sqlite-shm", "server.lock"} <= set(running)
    assert {"audit.head", "audit-key.pub", "token-key", "audit.jsonl"} <= set(stopped)
    for found in (running, stopped):
        assert {n: m for n, m in found.items() if m != 0o600} == {}


async def test_open_data_dir_and_files_are_fixed(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = sqlite3.connect(data / "revocations.sqlite")  # as an older version left it: 0644
    db.execute("CREATE TABLE revoked (jti TEXT PRIMARY KEY, at REAL NOT NULL)")
    db.close()
    assert modes(data)["revocations.sqlite"] == 0o644
    async with server_process(data) as srv:
        assert await srv.stop() == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {n: m for n, m in modes(data).items() if m != 0o600} == {}
    log = srv.log()
    assert "data-dir-permissions-fixed" in log and "revocations.sqlite 0o644->0o600" in log
    # key files that were open are refused, not fixed: they may have leaked
    (data / "token-key").chmod(0o644)
    r = cli("signaling", "--port", "0", "--data-dir", str(data))
    assert r.returncode == 2 and "too open" in r.stderr
