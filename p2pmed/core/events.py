"""Events a Session hands to the application (h11 style: small frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from p2pmed.core.frame import MessageClass


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    sas: str
    peer_fingerprint: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """`message_id` equals the id the sender's `Session.send` returned for this message."""

    message_id: int
    cls: MessageClass
    data: bytes
    seq: int
    sent_timestamp_us: int
    path_id: str


@dataclass(frozen=True, slots=True)
class MessageAcked:
    """The peer's application has the message (delivered, and persisted if it has a store)."""

    message_id: int
    cls: MessageClass


@dataclass(frozen=True, slots=True)
class FrameRejected:
    reason: str
    kind: str  # "frame" | "crypto" | "state"
    path_id: str


@dataclass(frozen=True, slots=True)
class PathUp:
    path_id: str


@dataclass(frozen=True, slots=True)
class PathDown:
    path_id: str


@dataclass(frozen=True, slots=True)
class PathQuality:
    path_id: str
    rtt: float  # seconds, smoothed heartbeat round trip
    loss: float  # fraction of recent heartbeats without answer, 0..1


@dataclass(frozen=True, slots=True)
class PathBound:
    """The peer's PATH_BIND matched what our DTLS verified: this direct path may carry data
    and media. `local`/`remote` are the certificate fingerprints it binds."""

    local: bytes
    remote: bytes


@dataclass(frozen=True, slots=True)
class SessionClosed:
    code: int
    reason: str


Event = (
    HandshakeCompleted
    | MessageReceived
    | MessageAcked
    | FrameRejected
    | PathUp
    | PathDown
    | PathQuality
    | PathBound
    | SessionClosed
)
