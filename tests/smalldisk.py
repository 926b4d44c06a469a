"""A real file system that fills up: a small tmpfs mounted by the test (as root, which is
how CI runs), filled with a file until it refuses with ENOSPC, and freed again."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SmallDisk:
    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.filler = mount / "filler"

    def fill(self) -> None:
        """Write until the file system refuses (ENOSPC), to the last page. SQLite notices
        when its WAL next needs a new page: the tests fill while the WAL is still young
        (it is reused from its start only after its first 1000 pages)."""
        with self.filler.open("ab", buffering=0) as f:
            for size in (1 << 16, 1 << 12):
                chunk = b"\0" * size
                while True:
                    try:
                        f.write(chunk)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
        st = os.statvfs(self.mount)
        assert st.f_bavail == 0, st

    def free(self) -> None:
        self.filler.unlink()


@contextmanager
def small_disk(where: Path) -> Iterator[SmallDisk]:
    """An 8 MiB tmpfs mounted at `where` (created) for the duration."""
    mount = where
    mount.mkdir()
    opts = "size=8m,mode=0700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], check=True)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
