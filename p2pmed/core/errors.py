"""One typed error family for everything the core rejects.

Each error carries a short, stable `reason` used as a metrics label.
"""

from __future__ import annotations


class ProtocolError(Exception):
    kind = "protocol"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{self.kind}/{reason}: {detail}" if detail else f"{self.kind}/{reason}")
        self.reason = reason
        self.detail = detail


class FrameError(ProtocolError):
    """The bytes are not a well-formed v1 frame."""

    kind = "frame"


class CryptoError(ProtocolError):
    """Authentication, decryption, replay or handshake verification failed."""

    kind = "crypto"


class StateError(ProtocolError):
    """A well-formed frame that does not fit the session's current state."""

    kind = "state"


class CodecError(ProtocolError):
    """An application payload (vitals, alarm, control) failed to decode."""

    kind = "codec"
