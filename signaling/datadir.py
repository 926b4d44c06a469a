"""The data dir is one server's: an exclusive lock held for the life of the process.

Two servers on one data dir interleaved their entries in one audit.jsonl (a duplicated
seq, and verify failing for good). flock(2) is released by the kernel when the process
ends in any way, SIGKILL included, so a crashed server never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

LOCK_FILE = "server.lock"
KEY_FILES = ("token-key", "audit-key.pem")  # too open means maybe leaked: refused (keys.py)


class DataDirError(Exception):
    pass


def secure_data_dir(data_dir: Path) -> list[str]:
    """Create the data dir 0700, or bring an existing one to 0700 and its files to 0600
    (a dir made by hand, or files from an older version, were 0755/0644). Key files are
    left to keys.py, which refuses them if too open. Returns what was changed."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = data_dir.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(f"{data_dir} is not a directory")
    if st.st_uid != os.geteuid():
        raise DataDirError(f"data dir {data_dir} is owned by uid {st.st_uid}, not this user")
    fixed = []
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(data_dir, 0o700)
        fixed.append(f"{data_dir} {oct(stat.S_IMODE(st.st_mode))}->0o700")
    for p in data_dir.iterdir():
        lst = p.lstat()
        if p.name in KEY_FILES or not stat.S_ISREG(lst.st_mode):
            continue
        if stat.S_IMODE(lst.st_mode) & 0o077:
            os.chmod(p, 0o600)
            fixed.append(f"{p.name} {oct(stat.S_IMODE(lst.st_mode))}->0o600")
    return fixed


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
