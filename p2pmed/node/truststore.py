"""Peer identities this node accepts: `trust.json` in --data-dir (0600, replaced atomically).

A hostile signaling server controls endpoint ids, session ids and roles it announces, and can
split a consultation to sit in the middle of both halves. It cannot forge an identity key.
So a counterpart is identified by (consultation, role): the consultation is the session id in
the join token the operator was given (not the one the server announces), and the role is the
counterpart's role there (clinician or observer for a patient node, patient for the others).

Trust on first use cannot tell a new clinician from an impostor; only enrolment (`p2pmed trust
add` with --require-known-peers) or a compared SAS can. So the rule depends on how many
endpoints the counterpart role legitimately has in one consultation:
  - one (a consultation has one patient: the counterpart of a clinician or observer node):
    strict. The first key is pinned; a different key later is refused (`identity-changed`,
    a HIGH technical alarm): a man in the middle, or a patient device that lost its key; only
    enrolment lets it back.
  - several (clinicians and observers, the counterparts of a patient node: a shift change, a
    second clinician, the same clinician in another browser): refusing a second key would
    break the product and protect nothing, since the first key was itself only trusted on
    first use. An unknown key is accepted and added to the consultation's pinned set, and the
    node reports it (event `identity-pinned`, "new": true when others were already pinned), so
    an operator or auditor sees every clinician identity that joined.

For a counterpart presenting key K as role R in consultation S:
  - K enrolled for R (any consultation) or pinned for (S, R): accepted, "known";
  - else with --require-known-peers: refused, "unknown" (`unknown-identity`);
  - else if R has several endpoints, or nothing is pinned for (S, R) yet: K is pinned, "pinned";
  - else: refused, "changed" (`identity-changed`).
Each entry records when its key was first and last seen, and when a user compared the SAS and
marked it verified ("verified").
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

from p2pmed.node import datadir

FILE = "trust.json"
LOCK = "trust.lock"
ROLES = ("patient", "clinician", "observer")
SINGLE = frozenset({"patient"})  # roles with one endpoint per consultation: pinned strictly
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
    first_seen: float | None = None  # first handshake with this key (None: never)
    last_seen: float | None = None


Verdict = Literal["known", "pinned", "changed", "unknown"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    expected: tuple[str, ...] = ()  # fingerprints accepted for (session, role) before this
    new: bool = False  # pinned alongside identities already accepted for (session, role)

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
        now = time.time()
        with self._locked() as entries:
            mine = [e for e in entries if e.role == role and e.session in (None, session)]
            expected = tuple(sorted({e.fingerprint for e in mine}))
            if fingerprint in expected:
                for e in mine:
                    if e.fingerprint == fingerprint:
                        _seen(e, now)
                return Decision("known", expected)
            if require_known:
                return Decision("unknown", expected)
            if role in SINGLE and any(e.session == session for e in mine):
                return Decision("changed", expected)
            entries.append(Entry(fingerprint, role, "first-use", session, "", now, None, now, now))
            return Decision("pinned", expected, new=bool(expected))

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
            now = time.time()
            if not hit:
                hit = [Entry(fingerprint, role, "first-use", session, "", now, None, now, now)]
                entries.append(hit[0])
            for e in hit:
                e.verified = now

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
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise TrustError(
                f"trust store {self.path} is damaged ({exc}); fix or remove it"
            ) from None
        return entries

    def _write(self, entries: list[Entry]) -> None:
        doc = {"version": 1, "peers": [asdict(e) for e in entries]}
        datadir.write(self.path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))

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


def _seen(e: Entry, now: float) -> None:
    if e.first_seen is None:
        e.first_seen = now
    e.last_seen = now


def _entry_fields(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError("an entry is not an object")
    fields = {k: item[k] for k in Entry.__dataclass_fields__ if k in item}
    fields["fingerprint"] = normalize_fingerprint(str(fields["fingerprint"]))
    check_role(str(fields["role"]))
    for name in ("verified", "first_seen", "last_seen"):
        value = fields.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError(f"{name} is not a time")
    return fields
