"""The direct path binding (docs/protocol.md, PATH_BIND): which DTLS certificates a peer's
PATH_BIND must name, and the verdict on one. The handshake itself always carries zero
fingerprints: a value parsed from SDP is never trusted."""

from __future__ import annotations

import enum
from collections import deque

from p2pmed.core.errors import FrameError


class Verdict(enum.Enum):
    BOUND = "bound"  # names what our DTLS verified: the direct path may carry data
    STALE = "stale"  # names an earlier negotiation (or none, from before a restart)
    HELD = "held"  # names a negotiation whose DTLS has not connected yet: decided later
    ATTACK = "attack"  # names other certificates: a man in the middle on the direct path


class DirectBinding:
    __slots__ = ("bound", "held", "known", "local", "pending_local", "remote")

    def __init__(self) -> None:
        # our certificate's and the peer's, as the completed DTLS handshake verified them;
        # None until a DTLS transport connected
        self.local: bytes | None = None
        self.remote: bytes | None = None
        # (local, remote) of recent negotiations: a PATH_BIND that crossed a renegotiation
        # names one of these and is stale, not an attack
        self.known: deque[tuple[bytes, bytes]] = deque(maxlen=4)
        # our certificates of negotiations whose DTLS has not connected yet, and the latest
        # PATH_BIND naming one of them, checked once that DTLS connects
        self.pending_local: deque[bytes] = deque(maxlen=4)
        self.held: tuple[bytes, bytes] | None = None
        self.bound: tuple[bytes, bytes] | None = None

    def expect(self, local: bytes) -> None:
        _check(local)
        if local not in self.pending_local:
            self.pending_local.append(bytes(local))

    def remember(self, local: bytes, remote: bytes) -> None:
        _check(local, remote)
        self.known.append((bytes(local), bytes(remote)))

    def connected(self, local: bytes, remote: bytes) -> tuple[bytes, bytes] | None:
        """Our DTLS connected. Returns a held peer bind (peer cert, my cert) to check now."""
        _check(local, remote)
        local, remote = bytes(local), bytes(remote)
        self.local, self.remote = local, remote
        self.known.append((local, remote))
        if local in self.pending_local:
            self.pending_local.remove(local)
        held = self.held
        if held is not None and (held[1] == local or held[1] not in self.pending_local):
            self.held = None
            return held
        return None

    def payload(self) -> bytes | None:
        """Our PATH_BIND payload, once our DTLS connected."""
        if self.local is None or self.remote is None:
            return None
        return b"\x06direct" + self.local + self.remote

    def on_bind(self, payload: bytes) -> Verdict:
        """A peer's PATH_BIND payload. Raises FrameError on a malformed one."""
        n = payload[0] if payload else 0
        if not payload or len(payload) != 1 + n + 64:
            raise FrameError("payload", "malformed PATH_BIND")
        peer_cert = payload[1 + n : 33 + n]  # the sender's own certificate
        my_cert = payload[33 + n :]  # the certificate the sender's DTLS saw from us
        if my_cert != self.local:
            if my_cert in self.pending_local or (self.local is None and self.pending_local):
                # our DTLS for that negotiation has not connected yet: check it when it does
                self.held = (peer_cert, my_cert)
                return Verdict.HELD
            if self.local is None:
                # no negotiation here at all: a bind sent before we restarted (relayed from
                # the server's queue); whatever it names, it binds nothing
                return Verdict.STALE
        return self.check(peer_cert, my_cert)

    def check(self, peer_cert: bytes, my_cert: bytes) -> Verdict:
        if peer_cert == self.remote and my_cert == self.local:
            self.bound = (my_cert, peer_cert)
            return Verdict.BOUND
        if (my_cert, peer_cert) in self.known:
            return Verdict.STALE
        return Verdict.ATTACK


def _check(*fps: bytes) -> None:
    if any(len(fp) != 32 for fp in fps):
        raise ValueError("fingerprints are 32-byte SHA-256 digests")
