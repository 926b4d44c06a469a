"""The server's keys, kept in the data dir with mode 0600.

token-key: 32 random bytes (hex), the HMAC-SHA256 key of join tokens.
audit-key.pem: Ed25519, signs audit checkpoints (audit-key.pub lets anyone verify).
Neither can decrypt a payload: end-to-end keys exist only on the endpoints.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TOKEN_KEY = "token-key"
AUDIT_KEY = "audit-key.pem"
AUDIT_PUB = "audit-key.pub"


class KeyFileError(Exception):
    pass


def ensure_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return data_dir


def _read_private(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        msg = f"{path}: key file not found (start the server once to create it)"
        raise KeyFileError(msg) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: permissions {oct(st.st_mode & 0o777)} too open, need 0600")
    return path.read_bytes()


def _create(path: Path, content: bytes) -> None:
    ensure_data_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def load_secret(path: Path) -> bytes:
    try:
        key = bytes.fromhex(_read_private(path).decode().strip())
    except ValueError:
        raise KeyFileError(f"{path}: not a hex-encoded key") from None
    if len(key) < 32:
        raise KeyFileError(f"{path}: key shorter than 32 bytes")
    return key


def load_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        _create(path, os.urandom(32).hex().encode() + b"\n")
    return load_secret(path)


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_read_private(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_or_create(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return load_private(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _create(path, pem)
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def audit_key(data_dir: Path) -> Ed25519PrivateKey:
    key = load_or_create(data_dir / AUDIT_KEY)
    pub = data_dir / AUDIT_PUB
    if not pub.exists():
        _create(pub, public_pem(key.public_key()))  # 0600 like every file in the dir
    return key
