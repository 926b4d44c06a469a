"""Long-term Ed25519 identity of a node, its file on disk and its human fingerprint."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from p2pmed.core.errors import CryptoError

PUBLIC_SIZE = 32
SIGNATURE_SIZE = 64
FINGERPRINT_BYTES = 16  # 128 bits of SHA-256 shown to humans
_MAX_FILE = 64 * 1024


def fingerprint_of(public: bytes) -> str:
    """ "p2pmed:" + the first 128 bits of SHA-256(public key), as 8 groups of 4 hex digits."""
    digest = hashlib.sha256(public).hexdigest()[: FINGERPRINT_BYTES * 2]
    return "p2pmed:" + " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def verify_signature(public: bytes, signature: bytes, data: bytes) -> None:
    """Raise CryptoError("signature") unless `signature` is a valid Ed25519 signature."""
    if len(public) != PUBLIC_SIZE or len(signature) != SIGNATURE_SIZE:
        raise CryptoError("signature", "bad key or signature length")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise CryptoError("signature", "Ed25519 signature does not verify") from None


class Identity:
    """An Ed25519 key pair. The private key never leaves this object except to its file."""

    __slots__ = ("_key", "public_bytes")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_bytes: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Identity:
        """Build from a raw 32-byte Ed25519 seed (test vectors, key import)."""
        if len(seed) != 32:
            raise CryptoError("identity", "Ed25519 seed must be 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the PEM (PKCS#8) key at `path`, creating it with mode 0600 if absent.

        Creation is atomic: the key is written to a private temporary file and linked
        into place, so a crash never leaves a half-written key and two processes racing
        end up with the same key. A file readable or writable by group/others is
        refused with CryptoError("identity_permissions").
        """
        path = os.fspath(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        identity = cls.generate()
        pem = identity._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return cls._load(path)  # another process won the race; use its key
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(directory)
        return identity

    @classmethod
    def _load(cls, path: str) -> Identity:
        # O_NOFOLLOW: never a key through a symlink; O_NONBLOCK: a FIFO must not hang us
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as exc:
            why = "is a symlink" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
            raise CryptoError("identity", f"{path} {why}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CryptoError("identity", f"{path} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise CryptoError(
                    "identity_permissions",
                    f"{path} has mode {mode:04o}: the identity key must be private to its"
                    f" owner; run `chmod 600 {path}`",
                )
            data = b""
            while len(data) <= _MAX_FILE and (chunk := os.read(fd, 8192)):
                data += chunk
        finally:
            os.close(fd)
        try:
            if data.startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(data, password=None)
            elif len(data) == 32:
                key = Ed25519PrivateKey.from_private_bytes(data)
            else:
                raise ValueError("neither PEM nor a raw 32-byte seed")
        except (ValueError, TypeError) as exc:
            raise CryptoError("identity", f"{path} is not an Ed25519 private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CryptoError("identity", f"{path} holds a {type(key).__name__}, not Ed25519")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def fingerprint(self) -> str:
        return fingerprint_of(self.public_bytes)

    def __repr__(self) -> str:
        return f"Identity({self.fingerprint()!r})"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
