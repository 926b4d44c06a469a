"""docs/operations.md "Log rotation": audit.jsonl must not be rotated on its own (the server
then refuses to start: the log ends before its signed head); archiving the log together
with its head and audit key starts a new chain, and the archive still verifies."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from signaling.testing import server_process, start_process
from tests.deploy.manual import Site, blocks, run_block

ARCHIVED = ("audit.jsonl", "audit.head", "audit-key.pem", "audit-key.pub")


async def _verify(log: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "audit", "verify", str(log),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_rotating_the_audit_log_alone_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_process(data) as srv:
        assert await srv.stop() == 0
    (data / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")  # what logrotate would do
    proc, log, _ = await start_process(data)
    assert await proc.wait() == 2
    assert "truncated" in log.read_text()


async def test_archiving_log_head_and_key_together(tmp_path: Path) -> None:
    site = Site(tmp_path / "host", 8443, 3478, 9464)
    data = site.root / "var" / "lib" / "p2pmed-signaling"
    async with server_process(data) as srv:
        assert await srv.stop() == 0
    await run_block(site, blocks()["archive-audit"])  # the manual's commands
    archive = site.root / "var" / "backups" / "p2pmed" / "audit-2026-12"
    assert sorted(p.name for p in archive.iterdir()) == sorted(ARCHIVED)
    async with server_process(data) as srv:  # a new key and a new chain
        assert await srv.stop() == 0
    code, out = await _verify(archive / "audit.jsonl")
    assert code == 0, out
    code, out = await _verify(data / "audit.jsonl")
    assert code == 0, out
    assert (archive / "audit-key.pub").read_bytes() != (data / "audit-key.pub").read_bytes()
