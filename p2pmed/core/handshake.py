"""The 4-message end-to-end handshake of protocol.md section 3, as a sans-IO state machine.

    HS_COMMIT  I->R  commit = SHA-256("p2pmed v1 commit" || eI || idI)
    HS_REPLY   R->I  eR || idR || fpR_local || fpI_seen_by_R
    HS_REVEAL  I->R  eI || idI || fpI_local || fpR_seen_by_I || sigI
    HS_CONFIRM R->I  sigR

Malformed, out-of-order and duplicated messages raise CryptoError("handshake") and leave
the state untouched (so a stray or resent frame cannot break a good handshake). A failed
verification (commit, signature, fingerprint, peer key) refuses the session for good.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2pmed.core.crypto import derive_chains, derive_sas
from p2pmed.core.errors import CryptoError
from p2pmed.core.frame import FrameType
from p2pmed.core.identity import Identity, fingerprint_of, verify_signature

KEY = 32
FP = 32
SIG = 64
COMMIT_SIZE = 32
REPLY_SIZE = KEY + KEY + FP + FP  # 128
REVEAL_HEAD = KEY + KEY + FP + FP  # 128: the part of HS_REVEAL covered by T
REVEAL_SIZE = REVEAL_HEAD + SIG  # 192
CONFIRM_SIZE = SIG  # 64
NO_FINGERPRINT = bytes(FP)  # used when no direct path exists

_COMMIT_LABEL = b"p2pmed v1 commit"
_TRANSCRIPT_LABEL = b"p2pmed v1 transcript"
_SIG_I_LABEL = b"p2pmed v1 initiator"
_SIG_R_LABEL = b"p2pmed v1 responder"

# protocol step -> pn of its handshake frame
HANDSHAKE_PN = {
    FrameType.HS_COMMIT: 0,
    FrameType.HS_REPLY: 1,
    FrameType.HS_REVEAL: 2,
    FrameType.HS_CONFIRM: 3,
}


def commitment(ephemeral: bytes, identity: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_LABEL + ephemeral + identity).digest()


def transcript_hash(session_id: str, commit: bytes, reply: bytes, reveal: bytes) -> bytes:
    """T over the session id and the three handshake payloads (only reveal[0:128])."""
    sid = session_id.encode("utf-8")
    return hashlib.sha256(
        _TRANSCRIPT_LABEL
        + len(sid).to_bytes(2, "big")
        + sid
        + commit
        + reply
        + reveal[:REVEAL_HEAD]
    ).digest()


@dataclass(frozen=True)
class HandshakeResult:
    send_chain: bytes
    recv_chain: bytes
    transcript_hash: bytes
    sas: str
    peer_public: bytes
    peer_fingerprint: str


class HandshakeState(enum.Enum):
    START = "start"
    WAIT_COMMIT = "wait_commit"  # responder
    WAIT_REPLY = "wait_reply"  # initiator
    WAIT_REVEAL = "wait_reveal"  # responder
    WAIT_CONFIRM = "wait_confirm"  # initiator
    DONE = "done"
    FAILED = "failed"


_EXPECTED = {
    HandshakeState.WAIT_COMMIT: (FrameType.HS_COMMIT, COMMIT_SIZE),
    HandshakeState.WAIT_REPLY: (FrameType.HS_REPLY, REPLY_SIZE),
    HandshakeState.WAIT_REVEAL: (FrameType.HS_REVEAL, REVEAL_SIZE),
    HandshakeState.WAIT_CONFIRM: (FrameType.HS_CONFIRM, CONFIRM_SIZE),
}


def _check_fp(name: str, fp: bytes) -> bytes:
    if not isinstance(fp, bytes) or len(fp) != FP:
        raise ValueError(f"{name} must be a 32-byte SHA-256 fingerprint")
    return fp


class Handshake:
    """One endpoint's side of the handshake. Feed it handshake payloads; send what it returns."""

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        session_id: str,
        local_fp: bytes = NO_FINGERPRINT,
        remote_fp: bytes = NO_FINGERPRINT,
        random: Callable[[int], bytes] = os.urandom,
        peer_public: bytes | None = None,
    ) -> None:
        if len(session_id.encode("utf-8")) > 0xFFFF:
            raise ValueError("session_id longer than 65535 bytes")
        self._identity = identity
        self.initiator = initiator
        self._session_id = session_id
        self._local_fp = _check_fp("local_fp", local_fp)
        self._remote_fp = _check_fp("remote_fp", remote_fp)
        self._pinned_peer = peer_public
        self._eph = X25519PrivateKey.from_private_bytes(random(32))
        self._eph_pub = self._eph.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._state = HandshakeState.START if initiator else HandshakeState.WAIT_COMMIT
        self._commit = b""
        self._reply = b""
        self._transcript = b""
        self._peer_public = b""
        self._chains: tuple[bytes, bytes] = (b"", b"")
        self._result: HandshakeResult | None = None
        self._failure: CryptoError | None = None

    @property
    def complete(self) -> bool:
        return self._state is HandshakeState.DONE

    @property
    def failed(self) -> bool:
        return self._state is HandshakeState.FAILED

    @property
    def result(self) -> HandshakeResult | None:
        return self._result

    @property
    def state(self) -> HandshakeState:
        return self._state

    def expected(self) -> FrameType | None:
        """The handshake frame type this side waits for, if any."""
        step = _EXPECTED.get(self._state)
        return None if step is None else step[0]

    def set_fingerprints(self, local_fp: bytes, remote_fp: bytes) -> None:
        """Set the DTLS fingerprints; allowed only before this side has used them."""
        if self._state not in (
            HandshakeState.START,
            HandshakeState.WAIT_REPLY,
            HandshakeState.WAIT_COMMIT,
        ):
            raise CryptoError("handshake", "fingerprints are already bound to the handshake")
        self._local_fp = _check_fp("local_fp", local_fp)
        self._remote_fp = _check_fp("remote_fp", remote_fp)

    def start(self) -> tuple[FrameType, bytes] | None:
        """Initiator: returns (HS_COMMIT, payload). Responder: None (it waits)."""
        if not self.initiator:
            return None
        if self._state is not HandshakeState.START:
            raise CryptoError("handshake", "handshake already started")
        self._commit = commitment(self._eph_pub, self._identity.public_bytes)
        self._state = HandshakeState.WAIT_REPLY
        return FrameType.HS_COMMIT, self._commit

    def receive(self, ftype: FrameType, payload: bytes) -> tuple[FrameType, bytes] | None:
        """Process one handshake payload; returns the next (type, payload) to send, if any."""
        if self._state is HandshakeState.FAILED:
            raise CryptoError("handshake", f"handshake already refused ({self._failure})")
        expected = _EXPECTED.get(self._state)
        if expected is None or ftype != expected[0]:
            raise CryptoError(
                "handshake", f"unexpected {_name(ftype)} in state {self._state.value}"
            )
        try:
            data = bytes(payload)
        except (TypeError, ValueError):
            raise CryptoError("handshake", "payload is not bytes") from None
        if len(data) != expected[1]:
            raise CryptoError(
                "handshake", f"{_name(ftype)} of {len(data)} bytes, expected {expected[1]}"
            )
        if self._state is HandshakeState.WAIT_COMMIT:
            return self._on_commit(data)
        if self._state is HandshakeState.WAIT_REPLY:
            return self._on_reply(data)
        if self._state is HandshakeState.WAIT_REVEAL:
            return self._on_reveal(data)
        self._on_confirm(data)
        return None

    # -- steps -------------------------------------------------------------------------

    def _on_commit(self, commit: bytes) -> tuple[FrameType, bytes]:
        self._commit = commit
        self._reply = self._eph_pub + self._identity.public_bytes + self._local_fp + self._remote_fp
        self._state = HandshakeState.WAIT_REVEAL
        return FrameType.HS_REPLY, self._reply

    def _on_reply(self, reply: bytes) -> tuple[FrameType, bytes]:
        e_r, id_r, fp_r_local, fp_i_seen = reply[:32], reply[32:64], reply[64:96], reply[96:]
        self._check_peer(id_r)
        self._check_fingerprints(fp_r_local, fp_i_seen)
        reveal_head = self._eph_pub + self._identity.public_bytes + self._local_fp + self._remote_fp
        self._transcript = transcript_hash(self._session_id, self._commit, reply, reveal_head)
        self._chains = self._derive(e_r)
        self._reply = reply
        self._peer_public = id_r
        self._state = HandshakeState.WAIT_CONFIRM
        signature = self._identity.sign(_SIG_I_LABEL + self._transcript)
        return FrameType.HS_REVEAL, reveal_head + signature

    def _on_reveal(self, reveal: bytes) -> tuple[FrameType, bytes]:
        e_i, id_i = reveal[:32], reveal[32:64]
        fp_i_local, fp_r_seen, sig_i = reveal[64:96], reveal[96:128], reveal[128:]
        if not hmac.compare_digest(commitment(e_i, id_i), self._commit):
            raise self._fail("commit", "HS_REVEAL does not match the commitment of HS_COMMIT")
        self._check_peer(id_i)
        transcript = transcript_hash(self._session_id, self._commit, self._reply, reveal)
        self._verify(id_i, sig_i, _SIG_I_LABEL + transcript)
        self._check_fingerprints(fp_i_local, fp_r_seen)
        self._transcript = transcript
        i2r, r2i = self._derive(e_i)
        self._finish(id_i, send=r2i, recv=i2r)
        return FrameType.HS_CONFIRM, self._identity.sign(_SIG_R_LABEL + transcript)

    def _on_confirm(self, sig_r: bytes) -> None:
        self._verify(self._peer_public, sig_r, _SIG_R_LABEL + self._transcript)
        i2r, r2i = self._chains
        self._finish(self._peer_public, send=i2r, recv=r2i)

    # -- helpers -----------------------------------------------------------------------

    def _check_fingerprints(self, peer_local: bytes, peer_sees_me: bytes) -> None:
        """The peer's own DTLS fp must be the one we see, and it must see ours."""
        ok_peer = hmac.compare_digest(peer_local, self._remote_fp)
        ok_me = hmac.compare_digest(peer_sees_me, self._local_fp)
        if not (ok_peer and ok_me):
            raise self._fail(
                "fingerprint",
                "DTLS fingerprints differ between the endpoints (signaling tampered with SDP?)",
            )

    def _check_peer(self, peer_public: bytes) -> None:
        if self._pinned_peer is not None and not hmac.compare_digest(
            peer_public, self._pinned_peer
        ):
            raise self._fail(
                "identity", f"peer is {fingerprint_of(peer_public)}, not the pinned key"
            )

    def _verify(self, public: bytes, signature: bytes, data: bytes) -> None:
        try:
            verify_signature(public, signature, data)
        except CryptoError as exc:
            raise self._fail("signature", exc.detail) from None

    def _derive(self, peer_ephemeral: bytes) -> tuple[bytes, bytes]:
        try:
            shared = self._eph.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
        except ValueError:
            raise self._fail("handshake", "peer ephemeral key is a low-order point") from None
        return derive_chains(shared, self._transcript)

    def _finish(self, peer_public: bytes, *, send: bytes, recv: bytes) -> None:
        self._result = HandshakeResult(
            send_chain=send,
            recv_chain=recv,
            transcript_hash=self._transcript,
            sas=derive_sas(self._transcript),
            peer_public=peer_public,
            peer_fingerprint=fingerprint_of(peer_public),
        )
        self._state = HandshakeState.DONE
        self._chains = (b"", b"")
        del self._eph  # the ephemeral secret is not needed any more

    def _fail(self, reason: str, detail: str) -> CryptoError:
        self._state = HandshakeState.FAILED
        self._failure = CryptoError(reason, detail)
        self._chains = (b"", b"")
        return self._failure


def _name(ftype: object) -> str:
    return ftype.name if isinstance(ftype, FrameType) else repr(ftype)
