"""One typed error family for everything the core rejects (h11's split: the peer's
mistakes and our own are different errors).

Each error carries a short, stable `reason` used as a metrics label.
"""

from __future__ import annotations


class ProtocolError(Exception):
    kind = "protocol"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{self.kind}/{reason}: {detail}" if detail else f"{self.kind}/{reason}")
        self.reason = reason
        self.detail = detail


class RemoteProtocolError(ProtocolError):
    """The peer or the wire broke the protocol. Session.receive never raises these: it
    counts them in `stats` and reports a FrameRejected event."""


class LocalProtocolError(ProtocolError):
    """This side used the API in a way the protocol does not allow (a caller's bug);
    raised to the caller."""

    kind = "local"


class FrameError(RemoteProtocolError):
    """The bytes are not a well-formed v1 frame."""

    kind = "frame"


class CryptoError(RemoteProtocolError):
    """Authentication, decryption, replay or handshake verification failed."""

    kind = "crypto"


class StateError(RemoteProtocolError):
    """A well-formed frame that does not fit the session's current state."""

    kind = "state"


class LocalStateError(LocalProtocolError, StateError):
    """A call that does not fit the session's state (send after close, connect twice, the
    responder connecting). Also a StateError, which callers caught before the split."""

    kind = "state"


class CodecError(RemoteProtocolError):
    """An application payload (vitals, alarm, control) failed to decode."""

    kind = "codec"
