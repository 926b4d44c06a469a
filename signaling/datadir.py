"""The data dir is one server's: an exclusive lock held for the life of the process.

Two servers on one data dir interleaved their entries in one audit.jsonl (a duplicated
seq, and verify failing for good). flock(2) is released by the kernel when the process
ends in any way, SIGKILL included, so a crashed server never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "server.lock"


class DataDirInUse(Exception):
    pass


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data dir {data_dir} is in use by another server (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = -1
