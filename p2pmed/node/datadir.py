"""What a node keeps under --data-dir, besides its session store and trust store:

    identity.key   Ed25519 identity (PEM PKCS#8, 0600), created once and never replaced
    endpoint_id    the stable signaling endpoint id, so a restart takes over its old place
    resume_token   the server's resume token, so a node restarted after its join token
                   expired can still rejoin as itself

Every file here (and the trust store) is written by `write`: a private temporary file,
fsynced, then renamed (or, for a file that must never be replaced, linked) into place, and
the directory fsynced. Files are read without following symlinks or hanging on a FIFO
(O_NOFOLLOW | O_NONBLOCK, then a file-type check).

A stored resume token is used only when it belongs to the session, role and endpoint the
node is joining now: a data dir reused with another join URL must not rejoin the old
session. Its claims are read without checking the signature; the server checks it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import secrets
import stat
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pmed.core.errors import CryptoError
from p2pmed.core.identity import Identity
from p2pmed.node.errors import NodeError
from p2pmed.transport.relay import ENDPOINT_ID

IDENTITY_FILE = "identity.key"
ENDPOINT_FILE = "endpoint_id"
RESUME_FILE = "resume_token"

log = logging.getLogger("p2pmed.node.datadir")


class PrivateFileError(OSError):
    """A private file that cannot be used; str() is one line naming the file and why."""

    def __str__(self) -> str:
        return str(self.args[0])


# ---- private files ----
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


def write(path: str, data: bytes, *, exclusive: bool = False) -> None:
    """Atomically put `data` at `path`, mode 0600, durable (file and directory fsynced).
    `exclusive`: never replace an existing file (FileExistsError): two processes racing
    to create it end up with the same content, the first one's."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)


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


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- identity and endpoint id ----
def load_identity(data_dir: str | None) -> Identity:
    """The node's identity key (a new one each run without a data dir)."""
    if data_dir is None:
        return Identity.generate()
    path = os.path.join(data_dir, IDENTITY_FILE)
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        if not os.path.lexists(path):
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                write(path, pem, exclusive=True)
                return Identity(key)
        return Identity.load_or_create(path)  # loads (and checks) the existing key
    except CryptoError as exc:
        raise NodeError(exc.detail or str(exc)) from None
    except OSError as exc:
        raise NodeError(f"cannot use --data-dir {data_dir}: {exc}") from None


def load_endpoint_id(data_dir: str | None) -> str:
    """The stored endpoint id, or a new one (stored when there is a data dir)."""
    if data_dir is None:
        return "n" + secrets.token_hex(8)
    path = os.path.join(data_dir, ENDPOINT_FILE)
    try:
        data = read(path, 256)
        if data is not None:
            value = data.decode("ascii", errors="replace").strip()
            if ENDPOINT_ID.match(value):
                precreate(path)  # an old file may be 0644
                return value
        value = "n" + secrets.token_hex(8)
        write(path, value.encode("ascii"))
    except OSError as exc:
        raise NodeError(f"cannot use {path}: {exc}") from None
    return value


# ---- resume token ----
def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified; {} when it cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
        return {}
    return value if isinstance(value, dict) else {}


def load_resume(data_dir: str | None, join_token: str, endpoint_id: str) -> str | None:
    if data_dir is None:
        return None
    try:
        data = read(os.path.join(data_dir, RESUME_FILE), 8192)
        if data is None:
            return None
        token = data.decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    mine, join = claims(token), claims(join_token)
    same = (
        mine.get("eid") == endpoint_id
        and mine.get("root") == join.get("jti")
        and mine.get("sub") == join.get("sub")
        and mine.get("role") == join.get("role")
    )
    return token if same else None


def save_resume(data_dir: str | None, token: str) -> None:
    """Best effort: a node that cannot write it still holds the token in memory."""
    if data_dir is None:
        return
    try:
        write(os.path.join(data_dir, RESUME_FILE), token.encode("ascii", errors="replace"))
    except OSError as exc:
        log.warning("cannot keep the resume token in %s: %s", data_dir, exc)
