"""Small private files under --data-dir: created 0600 whatever the umask, read without
following symlinks or hanging on a FIFO (O_NOFOLLOW | O_NONBLOCK, then a file-type check)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat


class PrivateFileError(OSError):
    """A private file that cannot be used; str() is one line naming the file and why."""

    def __str__(self) -> str:
        return str(self.args[0])


def read(path: str, limit: int = 64 * 1024) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise PrivateFileError(f"{path} {why}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PrivateFileError(f"{path} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write(path: str, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600, durable (fsync)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def precreate(path: str) -> None:
    """Create `path` empty with mode 0600 if absent (before a library, e.g. SQLite, opens it
    with its own mode), and tighten an existing regular file to 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        why = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise PrivateFileError(f"{path} {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
