"""One server per data dir: a second one is refused with the first one's pid, and the
lock goes with the process, SIGKILL included (real processes)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from signaling.datadir import DataDirInUse, DataDirLock
from signaling.testing import running_server, server_process, start_process


async def test_second_server_on_same_data_dir_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_process(data) as first:
        before = (data / "audit.jsonl").read_text()
        proc, log_path, _ = await start_process(data)
        assert await proc.wait() == 2
        err = log_path.read_text().strip()
        assert err == (
            f"p2pmed signaling: error: data dir {data} is in use by another server"
            f" (pid {first.proc.pid})"
        )
        # the refused server wrote nothing into the shared files
        assert (data / "audit.jsonl").read_text() == before
        # in-process servers take the same lock
        with pytest.raises(DataDirInUse):
            async with running_server(data):
                pass
        await first.stop(signal.SIGKILL)
    # the kernel released the lock with the killed process: the next server starts
    async with server_process(data) as again:
        assert await again.stop() == 0


def test_lock_released_on_release(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    with pytest.raises(DataDirInUse, match="pid"):
        DataDirLock(tmp_path)
    lock.release()
    DataDirLock(tmp_path).release()
