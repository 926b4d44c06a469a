"""The signed head of the audit log, kept apart from it (DATA_DIR/audit.head).

The hash chain shows an edited or removed entry in the middle, and checkpoints show a
forged one, but a log cut back to a signed checkpoint still verifies. The head closes
that: a small file holding the newest entry's seq and hash, signed with the audit key,
rewritten (atomically) about once a second while entries are added and at shutdown. A
log that ends before the head's seq was truncated; one whose entry at that seq has
another hash was rewritten. The server refuses to start on either, and `p2pmed audit
verify` fails. The head's seq is also the `p2pmed_audit_head_seq` metric, so a
monitoring system keeps a record off the machine (`audit verify --min-seq N`).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEAD_FILE = "audit.head"
HEAD_CONTEXT = b"p2pmed audit v1 head"


class HeadError(Exception):
    pass


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str

    def message(self) -> bytes:
        return HEAD_CONTEXT + f"{self.seq}:{self.hash}".encode()

    def signed(self, key: Ed25519PrivateKey) -> bytes:
        sig = base64.b64encode(key.sign(self.message())).decode()
        return json.dumps({"seq": self.seq, "hash": self.hash, "sig": sig}).encode() + b"\n"


def head_path(log_path: Path) -> Path:
    """audit.jsonl -> audit.head, beside it."""
    return log_path.with_suffix(".head")


def write_head(path: Path, data: bytes) -> None:
    """Replace the head file atomically (a crash leaves the old or the new one, 0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_head(path: Path, public: Ed25519PublicKey | None) -> Head | None:
    """The head at `path` (None if there is none), its signature checked when a key is given."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(raw)
        head = Head(int(obj["seq"]), str(obj["hash"]))
        sig = base64.b64decode(obj["sig"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise HeadError(f"{path}: not an audit head") from None
    if public is not None:
        try:
            public.verify(sig, head.message())
        except InvalidSignature:
            raise HeadError(f"{path}: signature does not verify") from None
    return head
