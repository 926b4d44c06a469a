"""Typed node events: the peer layer (session driver, direct path negotiator, peer link)
hands these to Events.publish, which prints them with --json exactly as the named events
always were: {"event": NAME, "ts": ..., then the fields in the order declared here}. A field
marked `optional` is left out while it is None; a field marked `inline` (a message summary,
always the last field) is a dict whose keys are printed as fields of their own."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_OPTIONAL = {"optional": True}
_INLINE = {"inline": True}


@dataclass(frozen=True, slots=True)
class NodeEvent:
    NAME: ClassVar[str] = ""

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            if f.metadata.get("inline"):
                out.update(value)
                continue
            out[f.name] = value
        return out


# ---- the session ----
@dataclass(frozen=True, slots=True)
class Handshake(NodeEvent):
    NAME: ClassVar[str] = "handshake"
    peer: str
    sas: str
    peer_fingerprint: str


@dataclass(frozen=True, slots=True)
class SessionClosed(NodeEvent):
    NAME: ClassVar[str] = "session-closed"
    peer: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionReset(NodeEvent):
    NAME: ClassVar[str] = "session-reset"
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class CandidateExpired(NodeEvent):
    NAME: ClassVar[str] = "candidate-expired"
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class PeerError(NodeEvent):
    NAME: ClassVar[str] = "error"
    peer: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class TechnicalAlarm(NodeEvent):
    NAME: ClassVar[str] = "technical-alarm"
    peer: str
    code: str
    priority: str | None = field(default=None, metadata=_OPTIONAL)
    message: str = ""


@dataclass(frozen=True, slots=True)
class TechnicalAlarmCleared(NodeEvent):
    NAME: ClassVar[str] = "technical-alarm-cleared"
    peer: str
    code: str


# ---- paths ----
@dataclass(frozen=True, slots=True)
class PathActive(NodeEvent):
    """The path carrying traffic changed; for the direct path, the ICE candidate types of
    the pair it runs on (relay: through TURN)."""

    NAME: ClassVar[str] = "path"
    peer: str
    active: str | None
    previous: str | None
    local_candidate: str | None = field(default=None, metadata=_OPTIONAL)
    remote_candidate: str | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class PathUp(NodeEvent):
    NAME: ClassVar[str] = "path-up"
    peer: str
    path: str


@dataclass(frozen=True, slots=True)
class PathDown(NodeEvent):
    NAME: ClassVar[str] = "path-down"
    peer: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class PathQuality(NodeEvent):
    NAME: ClassVar[str] = "path-quality"
    peer: str
    path: str
    grade: str
    rtt_ms: float
    loss: float


# ---- the direct path ----
@dataclass(frozen=True, slots=True)
class DirectOffer(NodeEvent):
    NAME: ClassVar[str] = "direct-offer"
    peer: str
    generation: int


@dataclass(frozen=True, slots=True)
class DirectOpen(NodeEvent):
    NAME: ClassVar[str] = "direct-open"
    peer: str
    generation: int


@dataclass(frozen=True, slots=True)
class DirectBound(NodeEvent):
    NAME: ClassVar[str] = "direct-bound"
    peer: str
    generation: int
    tracks: int


@dataclass(frozen=True, slots=True)
class DirectFailed(NodeEvent):
    NAME: ClassVar[str] = "direct-failed"
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class DirectStalled(NodeEvent):
    NAME: ClassVar[str] = "direct-stalled"
    peer: str
    grace_s: float


@dataclass(frozen=True, slots=True)
class DirectRecovered(NodeEvent):
    NAME: ClassVar[str] = "direct-recovered"
    peer: str


@dataclass(frozen=True, slots=True)
class DirectLost(NodeEvent):
    NAME: ClassVar[str] = "direct-lost"
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class DirectRetry(NodeEvent):
    NAME: ClassVar[str] = "direct-retry"
    peer: str
    after_s: float


@dataclass(frozen=True, slots=True)
class SdpRejected(NodeEvent):
    NAME: ClassVar[str] = "rejected"
    peer: str
    kind: str
    reason: str
    path: str
    count: int
    message: str


# ---- the node ----
@dataclass(frozen=True, slots=True)
class OutputDropped(NodeEvent):
    """Lines of --json output dropped because the reader of stdout was too slow."""

    NAME: ClassVar[str] = "output-dropped"
    count: int


@dataclass(frozen=True, slots=True)
class Joined(NodeEvent):
    NAME: ClassVar[str] = "joined"
    role: str
    session: str
    endpoint_id: str
    waiting: bool
    fingerprint: str
    ice_servers: int


@dataclass(frozen=True, slots=True)
class SignalingState(NodeEvent):
    NAME: ClassVar[str] = "signaling"
    state: str  # up | down


@dataclass(frozen=True, slots=True)
class PeerState(NodeEvent):
    """A peer is present, back, left, restored from the store or revoked."""

    NAME: ClassVar[str] = "peer"
    peer: str
    role: str | None = field(default=None, metadata=_OPTIONAL)
    state: str = ""
    sas: str | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class NodeErrorEvent(NodeEvent):
    NAME: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class StoreFailed(NodeEvent):
    """The node's store cannot be written (disk full, I/O error): nothing new is durable,
    so no frame leaves and nothing received is acted on until it can. Once per failure."""

    NAME: ClassVar[str] = "store-failed"
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class StoreRecovered(NodeEvent):
    NAME: ClassVar[str] = "store-recovered"
    path: str
    failed_s: float  # how long nothing could be written
    attempts: int  # commits refused meanwhile


@dataclass(frozen=True, slots=True)
class ServerError(NodeEvent):
    """An error message from the signaling server (`to`: the peer it was about, or None)."""

    NAME: ClassVar[str] = "error"
    code: str
    message: str
    to: str | None


@dataclass(frozen=True, slots=True)
class SignalRejected(NodeEvent):
    NAME: ClassVar[str] = "rejected"
    kind: str
    reason: str
    detail: str
    count: int


@dataclass(frozen=True, slots=True)
class AppRejected(NodeEvent):
    NAME: ClassVar[str] = "rejected"
    peer: str
    kind: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class FrameRejected(NodeEvent):
    NAME: ClassVar[str] = "rejected"
    peer: str
    kind: str
    reason: str
    path: str
    count: int


@dataclass(frozen=True, slots=True)
class FingerprintMismatch(NodeEvent):
    NAME: ClassVar[str] = "fingerprint-mismatch"
    peer: str
    message: str


@dataclass(frozen=True, slots=True)
class Status(NodeEvent):
    NAME: ClassVar[str] = "status"
    peers: list[dict[str, Any]]
    rejected: dict[str, int]


@dataclass(frozen=True, slots=True)
class TrustVerified(NodeEvent):
    NAME: ClassVar[str] = "trust"
    action: str
    peer: str
    role: str
    fingerprint: str


# ---- trust and revocation ----
@dataclass(frozen=True, slots=True)
class IdentityPinned(NodeEvent):
    NAME: ClassVar[str] = "identity-pinned"
    peer: str
    role: str
    fingerprint: str
    new: bool
    identities: int


@dataclass(frozen=True, slots=True)
class IdentityAlarm(NodeEvent):
    """A refused peer identity (identity-changed, unknown-identity, trust-store)."""

    NAME: ClassVar[str] = "technical-alarm"
    peer: str
    code: str
    priority: str
    role: str
    fingerprint: str
    expected: list[str]
    message: str


@dataclass(frozen=True, slots=True)
class Revoked(NodeEvent):
    NAME: ClassVar[str] = "revoked"
    message: str
    detail: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class RevocationDone(NodeEvent):
    NAME: ClassVar[str] = "revocation-done"
    peer: str
    closed_ms: float


# ---- the patient role ----
@dataclass(frozen=True, slots=True)
class HrDetectionInThread(NodeEvent):
    NAME: ClassVar[str] = "hr-detection-in-thread"
    reason: str


@dataclass(frozen=True, slots=True)
class SourceStarted(NodeEvent):
    NAME: ClassVar[str] = "source-started"
    skip: int
    hr_source: str | None


@dataclass(frozen=True, slots=True)
class SourceGap(NodeEvent):
    """The node was stopped longer than it catches up: the source goes on from now, and the
    messages that were due while it was down (never generated) are skipped, not replayed."""

    NAME: ClassVar[str] = "source-gap"
    skipped: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SourceEnded(NodeEvent):
    NAME: ClassVar[str] = "source-ended"
    messages: int


@dataclass(frozen=True, slots=True)
class MessageSent(NodeEvent):
    """A vitals message queued (and durable) for one peer; `summary`: p2pmed.vitals.summary."""

    NAME: ClassVar[str] = "sent"
    peer: str
    id: int
    cls: str
    len: int
    crc: int
    summary: dict[str, Any] = field(metadata=_INLINE)


@dataclass(frozen=True, slots=True)
class AlarmSent(NodeEvent):
    """An alarm the patient's engine raised, changed or cleared."""

    NAME: ClassVar[str] = "alarm"
    alarm_id: int
    condition: str
    priority: str
    state: str
    category: str
    value: float | None


@dataclass(frozen=True, slots=True)
class ControlApplied(NodeEvent):
    NAME: ClassVar[str] = "control"
    peer: str
    command: str


@dataclass(frozen=True, slots=True)
class UnexpectedMessage(NodeEvent):
    NAME: ClassVar[str] = "unexpected"
    peer: str
    summary: dict[str, Any] = field(metadata=_INLINE)


@dataclass(frozen=True, slots=True)
class AlarmAcked(NodeEvent):
    """A clinician's ALARM_ACK reached the patient (`first`: the first for this alarm)."""

    NAME: ClassVar[str] = "alarm-ack"
    alarm_id: int
    by: str
    first: bool
    latency_ms: float | None


# ---- the clinician role ----
@dataclass(frozen=True, slots=True)
class PeerWaiting(NodeEvent):
    NAME: ClassVar[str] = "peer-waiting"
    peer: str
    role: str


@dataclass(frozen=True, slots=True)
class Admitted(NodeEvent):
    NAME: ClassVar[str] = "admit"
    peer: str


@dataclass(frozen=True, slots=True)
class MessageDelivered(NodeEvent):
    """A vitals message delivered by a peer's session (path "store": replayed from the inbox)."""

    NAME: ClassVar[str] = "message"
    peer: str
    id: int
    cls: str
    seq: int
    path: str
    len: int
    crc: int
    latency_ms: float
    replayed: bool
    summary: dict[str, Any] = field(metadata=_INLINE)


@dataclass(frozen=True, slots=True)
class WaveformGap(NodeEvent):
    NAME: ClassVar[str] = "waveform-gap"
    signal: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class AlarmReceived(NodeEvent):
    NAME: ClassVar[str] = "alarm"
    peer: str
    alarm_id: int
    condition: str
    priority: str
    state: str
    category: str
    value: float | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class AlarmAckedElsewhere(NodeEvent):
    NAME: ClassVar[str] = "alarm-acked-elsewhere"
    alarm_id: int
    by: str


@dataclass(frozen=True, slots=True)
class PatientStatusReceived(NodeEvent):
    NAME: ClassVar[str] = "patient-status"
    peer: str
    label: str | None
    shown_as: str
    stream: str
    hr_source: str | None
    subject: str | None


@dataclass(frozen=True, slots=True)
class StreamEnded(NodeEvent):
    NAME: ClassVar[str] = "stream-ended"
    peer: str
    label: str


@dataclass(frozen=True, slots=True)
class FhirSubjectDefault(NodeEvent):
    NAME: ClassVar[str] = "fhir-subject-default"
    peer: str
    subject: str


@dataclass(frozen=True, slots=True)
class AckSent(NodeEvent):
    NAME: ClassVar[str] = "ack-sent"
    peer: str
    alarm_id: int
