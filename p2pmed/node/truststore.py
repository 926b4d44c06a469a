"""Peer identities this node accepts: `trust.json` in --data-dir (0600, replaced atomically).

A hostile signaling server controls endpoint ids, session ids and roles it announces, and can
split a consultation to sit in the middle of both halves. It cannot forge an identity key.
So a counterpart is identified by (consultation, role): the consultation is the session id in
the join token the operator was given (not the one the server announces), and the role is the
counterpart's role there (clinician for a patient node, patient for a clinician node).

For a counterpart presenting key K as role R in consultation S:
  - K enrolled for R (`p2pmed trust add`, any consultation) or pinned for (S, R): accepted;
  - else with --require-known-peers: refused (`unknown-identity`);
  - else if nothing is pinned for (S, R) yet: K is pinned (trust on first use) and accepted;
  - else: refused, `identity-changed` (the counterpart of this consultation presents another
    key: a man in the middle, or a peer that lost its key; only enrolment lets it back).
A SAS the user compared and marked verified is recorded on the entry ("verified").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

FILE = "trust.json"
LOCK = "trust.lock"
ROLES = ("patient", "clinician", "observer")
MAX_LABEL = 64
MAX_FILE = 4 * 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{32}")


class TrustError(ValueError):
    """Bad input or an unusable trust store; the message says why in one line."""


def normalize_fingerprint(text: str) -> str:
    """'p2pmed:abcd ef01 ...', with or without the prefix, spaces or colons -> canonical form."""
    raw = text.strip().lower()
    if raw.startswith("p2pmed:"):
        raw = raw[len("p2pmed:") :]
    digits = re.sub(r"[\s:]", "", raw)
    if not _HEX.fullmatch(digits):
        raise TrustError(
            f"malformed fingerprint {text[:80]!r}: expected 'p2pmed:' and 32 hex digits "
            "(8 groups of 4), as `p2pmed node` prints it"
        )
    return "p2pmed:" + " ".join(digits[i : i + 4] for i in range(0, 32, 4))


def check_role(role: str) -> str:
    if role not in ROLES:
        raise TrustError(f"unknown role {role[:40]!r}: expected one of {', '.join(ROLES)}")
    return role


def check_label(label: str) -> str:
    text = label.strip()
    if len(text) > MAX_LABEL or not text.isprintable():
        raise TrustError(f"label must be printable text of at most {MAX_LABEL} characters")
    return text


@dataclass
class Entry:
    fingerprint: str
    role: str
    how: str  # "enrolled" | "first-use"
    session: str | None = None  # the consultation a first-use pin belongs to; None: any
    label: str = ""
    added: float = 0.0
    verified: float | None = None  # when a user marked the SAS verified


Verdict = Literal["known", "pinned", "changed", "unknown"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    expected: tuple[str, ...] = ()  # fingerprints accepted for (session, role)

    @property
    def accepted(self) -> bool:
        return self.verdict in ("known", "pinned")


class TrustStore:
    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir
        self.path = os.path.join(data_dir, FILE)

    # ---- queries and changes (each one reads the file: `p2pmed trust` may edit it) ----
    def entries(self) -> list[Entry]:
        return self._read()

    def check(self, fingerprint: str, role: str, session: str, *, require_known: bool) -> Decision:
        """Decide on a counterpart's key, pinning it on first use (see the module doc)."""
        fingerprint = normalize_fingerprint(fingerprint)
        with self._locked() as entries:
            mine = [e for e in entries if e.role == role and e.session in (None, session)]
            expected = tuple(sorted({e.fingerprint for e in mine}))
            if fingerprint in expected:
                return Decision("known", expected)
            if require_known:
                return Decision("unknown", expected)
            if any(e.session == session for e in mine):
                return Decision("changed", expected)
            entries.append(Entry(fingerprint, role, "first-use", session, "", time.time()))
            return Decision("pinned", expected)

    def add(self, fingerprint: str, role: str, label: str = "") -> bool:
        """Enrol a key for a role in every consultation. False if it already was."""
        fingerprint, role, label = (
            normalize_fingerprint(fingerprint),
            check_role(role),
            check_label(label),
        )
        with self._locked() as entries:
            for e in entries:
                if e.fingerprint == fingerprint and e.role == role and e.how == "enrolled":
                    if label and e.label != label:
                        e.label = label
                        return True
                    return False
            entries.append(Entry(fingerprint, role, "enrolled", None, label, time.time()))
            return True

    def remove(self, fingerprint: str, role: str | None = None) -> int:
        """Forget a key (every entry, or those of one role). Returns how many went."""
        fingerprint = normalize_fingerprint(fingerprint)
        if role is not None:
            check_role(role)
        with self._locked() as entries:
            keep = [
                e for e in entries if not (e.fingerprint == fingerprint and role in (None, e.role))
            ]
            gone = len(entries) - len(keep)
            entries[:] = keep
            return gone

    def mark_verified(self, fingerprint: str, role: str, session: str) -> None:
        """The user compared the SAS with this counterpart: record it (pinning if needed)."""
        fingerprint = normalize_fingerprint(fingerprint)
        with self._locked() as entries:
            hit = [
                e
                for e in entries
                if e.fingerprint == fingerprint and e.role == role and e.session in (None, session)
            ]
            if not hit:
                hit = [Entry(fingerprint, role, "first-use", session, "", time.time())]
                entries.append(hit[0])
            for e in hit:
                e.verified = time.time()

    # ---- file ----
    def _read(self) -> list[Entry]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TrustError(f"cannot read the trust store {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TrustError(f"trust store {self.path} is not a regular file")
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise TrustError(
                    f"trust store {self.path} has mode {stat.S_IMODE(st.st_mode):04o}: it must "
                    f"be private to its owner; run `chmod 600 {self.path}`"
                )
            data = os.read(fd, MAX_FILE + 1)
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
            items = doc["peers"]
            entries = [Entry(**_entry_fields(item)) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrustError(
                f"trust store {self.path} is damaged ({exc}); fix or remove it"
            ) from None
        return entries

    def _write(self, entries: list[Entry]) -> None:
        doc = {"version": 1, "peers": [asdict(e) for e in entries]}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Entry]]:
        """Read-modify-write under an exclusive lock; written back only when changed."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        lock = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            before = [asdict(e) for e in entries]
            yield entries
            if [asdict(e) for e in entries] != before:
                self._write(entries)
        finally:
            os.close(lock)


def _entry_fields(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError("an entry is not an object")
    fields = {k: item[k] for k in Entry.__dataclass_fields__ if k in item}
    fields["fingerprint"] = normalize_fingerprint(str(fields["fingerprint"]))
    check_role(str(fields["role"]))
    return fields


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
