import os
import re
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2pmed.core.errors import CryptoError
from p2pmed.core.identity import Identity, fingerprint_of, verify_signature

FP_RE = re.compile(r"^p2pmed:([0-9a-f]{4} ){7}[0-9a-f]{4}$")


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    assert len(ident.public_bytes) == 32
    sig = ident.sign(b"data")
    assert len(sig) == 64
    verify_signature(ident.public_bytes, sig, b"data")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda pub, sig, data: (pub, sig, data + b"x"),
        lambda pub, sig, data: (pub, bytes([sig[0] ^ 1]) + sig[1:], data),
        lambda pub, sig, data: (Identity.generate().public_bytes, sig, data),
        lambda pub, sig, data: (pub, sig[:63], data),
        lambda pub, sig, data: (pub[:31], sig, data),
        lambda pub, sig, data: (b"\xff" * 32, sig, data),
        lambda pub, sig, data: (pub, b"", data),
    ],
)
def test_verify_rejects(mutate) -> None:  # type: ignore[no-untyped-def]
    ident = Identity.generate()
    pub, sig, data = mutate(ident.public_bytes, ident.sign(b"data"), b"data")
    with pytest.raises(CryptoError) as e:
        verify_signature(pub, sig, data)
    assert e.value.reason == "signature"


def test_fingerprint_format() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert FP_RE.match(a.fingerprint())
    assert a.fingerprint() == fingerprint_of(a.public_bytes)
    assert a.fingerprint() != b.fingerprint()
    # first 16 bytes of SHA-256(b"") = e3b0c442 98fc1c14 9afbf4c8 996fb924
    assert fingerprint_of(b"") == "p2pmed:e3b0 c442 98fc 1c14 9afb f4c8 996f b924"


def test_from_private_bytes_is_deterministic() -> None:
    seed = bytes(range(32))
    assert Identity.from_private_bytes(seed).public_bytes == (
        Identity.from_private_bytes(seed).public_bytes
    )
    with pytest.raises(CryptoError):
        Identity.from_private_bytes(b"short")


def test_load_or_create_creates_private_file(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    second = Identity.load_or_create(str(path))
    assert second.public_bytes == first.public_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.pem"]  # no temp file left


def test_load_or_create_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Identity.load_or_create(tmp_path / "id.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "id.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_refuses_loose_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "id.pem"
    original = Identity.load_or_create(path)
    path.chmod(mode)
    with pytest.raises(CryptoError) as e:
        Identity.load_or_create(path)
    assert e.value.reason == "identity_permissions"
    assert "chmod 600" in str(e.value)
    path.chmod(0o600)  # nothing was overwritten
    assert Identity.load_or_create(path).public_bytes == original.public_bytes


def test_loads_raw_seed(tmp_path: Path) -> None:
    path = tmp_path / "id.raw"
    seed = bytes(range(32))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, seed)
    os.close(fd)
    assert Identity.load_or_create(path).public_bytes == (
        Identity.from_private_bytes(seed).public_bytes
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.close(fd)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        bytes(31),
        bytes(10_000),
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ],
)
def test_refuses_bad_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "id.pem"
    _write_private(path, content)
    with pytest.raises(CryptoError) as e:
        Identity.load_or_create(path)
    assert e.value.reason == "identity"
    assert path.read_bytes() == content  # never overwritten


def test_refuses_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir"
    path.mkdir(mode=0o700)
    with pytest.raises(CryptoError) as e:
        Identity.load_or_create(path)
    assert e.value.reason == "identity"


def test_concurrent_creation_agrees(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    results: list[bytes] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(Identity.load_or_create(path).public_bytes)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.pem"]


def test_refuses_fifo_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "id.pem"
    os.mkfifo(path, 0o600)  # a plain open() would block here until a writer came
    with pytest.raises(CryptoError, match="not a regular file"):
        Identity.load_or_create(path)


def test_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    Identity.load_or_create(real)
    link = tmp_path / "id.pem"
    link.symlink_to(real)
    with pytest.raises(CryptoError, match="symlink"):
        Identity.load_or_create(link)
