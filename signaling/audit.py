"""Append-only, hash-chained audit log (JSON lines) with Ed25519-signed checkpoints.

Every entry has `seq`, `ts`, `event`, `prev` (hash of the previous entry, 64 zeros
for the first) and `hash` = SHA-256 of the canonical JSON of the entry without
`hash` and `sig`. A checkpoint entry also has `sig` = Ed25519 over
"p2pmed audit v1 checkpoint" || hash, so it vouches for every entry before it.
Entries hold ids, roles, reasons and counts: never payloads, never PHI.
Each entry is one write() (it survives a crash of the process); the server fsyncs
the file about once a second from a thread and at shutdown, so a crash of the whole
machine can lose at most the last second.

When the file cannot be written (disk full, I/O error), `append` holds the entry in memory,
with its time, and writes it, in order, before the next entry that can be written (the
server also tries once a second): a consultation never waits for the disk. A join is
different: `record` writes now or raises, and the join is refused. Past MAX_HELD entries
held, the newest are counted instead, and that count is written as an `audit-dropped` entry
where they would have been.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signaling import logs
from signaling.audithead import Head, HeadError, head_path, read_head, write_head

GENESIS = "0" * 64
SIG_CONTEXT = b"p2pmed audit v1 checkpoint"
AUDIT_FILE = "audit.jsonl"
MAX_HELD = 20_000  # entries held in memory while the log cannot be written (~10 MB)


def _canonical(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


class AuditError(Exception):
    pass


def _hash_at(path: Path, seq: int) -> str | None:
    with path.open("rb") as f:
        for raw in f:
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict) and entry.get("seq") == seq:
                return str(entry.get("hash"))
    return None


class AuditLog:
    def __init__(
        self,
        path: Path,
        key: Ed25519PrivateKey,
        *,
        checkpoint_every: int = 100,
        server: str = "",
    ) -> None:
        self.path = path
        # in a cluster every entry names the server that wrote it (each keeps its own chain)
        self._server = {"server": server} if server else {}
        self._key = key
        self._every = checkpoint_every
        self._seq, self._prev = self._resume()
        self.head_path = head_path(path)
        # no head beside a non-empty log: written by a version without heads, or deleted
        self.head_missing = AuditLog._check_head(path, key.public_key()) and self._seq > 0
        self.head_seq = -1  # seq of the head last signed
        self._head_on_disk = -1
        self._head_failing = False
        # the sweeper fsyncs and writes the head from a thread, which a cancellation at
        # shutdown does not stop: close() waits for it (and a closed fd is never synced)
        self._io_lock = threading.RLock()
        self._since_checkpoint = 0
        self._unsynced = False
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._held: deque[tuple[str, str, dict[str, Any]]] = deque()
        self._dropped = 0  # entries not held (over MAX_HELD)
        self._refused_at: str | None = None  # since when the file refuses

    @staticmethod
    def check(path: Path, public: Ed25519PublicKey) -> None:
        """Raise AuditError if the log at `path` cannot be continued: torn or altered tail,
        or shorter than (or different from) its signed head."""
        AuditLog._check_head(path, public)

    @staticmethod
    def _check_head(path: Path, public: Ed25519PublicKey) -> bool:
        """Check the log against its head; True if there is no head."""
        seq, last = AuditLog._tail(path)
        hp = head_path(path)
        try:
            head = read_head(hp, public)
        except HeadError as e:
            raise AuditError(f"{e}; run `p2pmed audit verify`") from None
        if head is None:
            return True
        if head.seq > seq:
            raise AuditError(
                f"{path} ends at seq {seq} but its signed head {hp} says {head.seq}: the log"
                " was truncated; run `p2pmed audit verify`, keep both files as evidence"
            )
        h = last if head.seq == seq else _hash_at(path, head.seq)
        if h != head.hash:
            raise AuditError(
                f"{path}: entry seq {head.seq} differs from the signed head {hp}: the log was"
                " rewritten; run `p2pmed audit verify`, keep both files as evidence"
            )
        return False

    def _resume(self) -> tuple[int, str]:
        return self._tail(self.path)

    @staticmethod
    def _tail(path: Path) -> tuple[int, str]:
        if not path.exists() or path.stat().st_size == 0:
            return 0, GENESIS
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 65536))
            tail = f.read()
        if not tail.endswith(b"\n"):
            raise AuditError(f"{path}: last line is incomplete; run `p2pmed audit verify`")
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(last)
            seq, h = int(entry["seq"]), str(entry["hash"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise AuditError(f"{path}: last line is not an audit entry") from None
        if entry_hash(entry) != h:
            raise AuditError(f"{path}: last line's hash does not match its content")
        return seq, h

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def held(self) -> int:
        """Entries waiting in memory for the file to take them (see the module docstring)."""
        return len(self._held) + (self._dropped > 0)

    def append(self, event: str, **fields: Any) -> None:
        """Write one entry, or hold it when the file refuses (then nothing of it is in the
        file and the chain goes on from the entry before)."""
        ts = _now()
        if self.release():
            try:
                self._append(ts, event, fields)
                return
            except OSError as exc:
                self._refused(exc)
        if len(self._held) < MAX_HELD:
            self._held.append((ts, event, fields))
        else:
            self._dropped += 1

    def record(self, event: str, **fields: Any) -> None:
        """Write one entry now, after what is held; OSError if that cannot be done (and then
        nothing of it is in the file or held)."""
        if not self.release():
            raise OSError(errno.ENOSPC, f"audit log: {self.held} entries wait for the disk")
        try:
            self._append(_now(), event, fields)
        except OSError as exc:
            self._refused(exc)
            raise

    def release(self) -> bool:
        """Write what is held, in order; True once nothing is."""
        written = 0
        try:
            while self._held:
                ts, event, fields = self._held[0]
                self._append(ts, event, fields)
                self._held.popleft()
                written += 1
            if self._dropped:
                self._append(_now(), "audit-dropped", {"entries": self._dropped})
                self._dropped = 0
        except OSError as exc:
            self._refused(exc)
            return False
        if self._refused_at is not None:
            logs.event("audit-writable", logging.WARNING, since=self._refused_at, written=written)
            self._refused_at = None
        return True

    def _refused(self, exc: OSError) -> None:
        if self._refused_at is None:
            self._refused_at = _now()
            logs.event("audit-held", logging.ERROR, path=str(self.path), reason=str(exc))

    def _append(self, ts: str, event: str, fields: dict[str, Any]) -> None:
        seq = self._seq + 1
        entry: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "event": event,
            **self._server,
            **fields,
            "prev": self._prev,
        }
        body = _canonical(entry)
        h = hashlib.sha256(body).hexdigest()
        tail = f',"hash":"{h}"'
        if event == "checkpoint":
            sig = base64.b64encode(self._key.sign(SIG_CONTEXT + bytes.fromhex(h))).decode()
            tail += f',"sig":"{sig}"'
        # the line is the hashed canonical JSON with the hash (and sig) added: one encoding
        self._write(body[:-1] + tail.encode() + b"}\n")
        self._seq = seq
        self._prev = h
        self._unsynced = True
        if event == "checkpoint":
            self._since_checkpoint = 0
        else:
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._every:
                # this entry is written: a checkpoint the disk refuses is tried after the next
                with contextlib.suppress(OSError):
                    self._append(_now(), "checkpoint", {"entries": self._seq})

    def _write(self, line: bytes) -> None:
        """Append the whole line or nothing: a line cut short by a full disk would read as
        damage to `p2pmed audit verify` and stop the next start."""
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            n = os.write(self._fd, line)
            if n != len(line):
                raise OSError(errno.ENOSPC, f"audit log: {n} of {len(line)} bytes written")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise

    def position(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry."""
        return self._seq, self._prev

    def head_bytes(self, position: tuple[int, str]) -> bytes | None:
        """The signed head for `position`, or None if that head was already written."""
        seq, h = position
        if seq == self.head_seq or seq == 0:
            return None
        self.head_seq = seq
        return Head(seq, h).signed(self._key)

    def store_head(self, seq: int, data: bytes) -> None:
        """Write a head from head_bytes (any thread); an older one never replaces a newer."""
        with self._io_lock:
            if seq > self._head_on_disk:
                try:
                    write_head(self.head_path, data)
                except OSError as exc:  # disk full: the old head stays, a new one is tried
                    self.head_seq = self._head_on_disk
                    if not self._head_failing:
                        self._head_failing = True
                        logs.event("audit-head-failed", logging.WARNING, reason=str(exc))
                    return
                self._head_on_disk = seq
                self._head_failing = False

    def checkpoint(self) -> None:
        """A signed checkpoint now; none while entries are held (it is made after them)."""
        if self.release():
            try:
                self._append(_now(), "checkpoint", {"entries": self._seq})
            except OSError as exc:
                self._refused(exc)

    def dirty(self) -> bool:
        return self._since_checkpoint > 0

    def sync_fd(self) -> int | None:
        """The fd to pass to sync() (off the event loop) if anything was written since the
        last sync."""
        if not self._unsynced or self._fd < 0:
            return None
        self._unsynced = False
        return self._fd

    def sync(self, fd: int) -> None:
        with self._io_lock:
            if fd == self._fd:  # not closed meanwhile
                os.fsync(fd)

    def close(self) -> None:
        with self._io_lock:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            self.checkpoint()
            if self.held:  # the chain in the file is whole; these never reached it
                logs.event("audit-lost", logging.ERROR, entries=len(self._held) + self._dropped)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            pos = self.position()
            data = self.head_bytes(pos)
            if data is not None:
                self.store_head(pos[0], data)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class VerifyResult:
    ok: bool
    lines: int
    checkpoints: int
    bad_line: int | None = None
    problem: str = ""


def verify_log(
    path: Path,
    public: Ed25519PublicKey,
    *,
    allow_unsigned_tail: bool = False,
    head: Head | None = None,
    min_seq: int = 0,
) -> VerifyResult:
    """Check the chain and checkpoints; with `head` (already signature-checked) or
    `min_seq` (a seq recorded elsewhere, e.g. from the metric), also that nothing was cut."""
    prev, seq, checkpoints, last_signed, n = GENESIS, 0, 0, 0, 0
    head_hash: str | None = None

    def bad(line: int, problem: str) -> VerifyResult:
        return VerifyResult(False, n, checkpoints, line, problem)

    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return bad(n, "incomplete line")
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                return bad(n, "not valid JSON")
            if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
                return bad(n, "not an audit entry")
            if entry.get("seq") != seq + 1:
                return bad(n, f"seq {entry.get('seq')!r} where {seq + 1} was expected")
            if entry_hash(entry) != entry["hash"]:
                return bad(n, "entry content does not match its hash (entry altered)")
            if entry.get("prev") != prev:
                return bad(n, "prev does not match the previous entry's hash (chain broken)")
            if entry.get("event") == "checkpoint":
                try:
                    sig = base64.b64decode(entry.get("sig", ""), validate=True)
                    public.verify(sig, SIG_CONTEXT + bytes.fromhex(entry["hash"]))
                except (InvalidSignature, ValueError, TypeError):
                    return bad(n, "checkpoint signature does not verify")
                checkpoints += 1
                last_signed = n
            elif "sig" in entry:
                return bad(n, "signature on a non-checkpoint entry")
            prev, seq = entry["hash"], entry["seq"]
            if head is not None and seq == head.seq:
                head_hash = prev
    if n == 0:
        return VerifyResult(False, 0, 0, None, "log is empty")
    if head is not None and seq < head.seq:
        return bad(n, f"log ends at seq {seq} but the signed head says {head.seq} (truncated)")
    if head is not None and head_hash != head.hash:
        return bad(head.seq, f"entry seq {head.seq} differs from the signed head (rewritten)")
    if seq < min_seq:
        return bad(n, f"log ends at seq {seq}, before --min-seq {min_seq} (truncated)")
    if last_signed < n and not allow_unsigned_tail:
        return bad(
            last_signed + 1, f"lines {last_signed + 1}..{n} follow the last signed checkpoint"
        )
    return VerifyResult(True, n, checkpoints)
