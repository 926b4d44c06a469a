"""Session configuration and lifecycle states (re-exported by p2pmed.core.session)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from p2pmed.core.frame import DEFAULT_CHUNK, MAX_CHUNK
from p2pmed.core.frame import NUM_CLASSES as NUM_CLASSES
from p2pmed.core.identity import Identity


class SessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    REKEYING = "rekeying"  # send keys ratcheted; waiting for an answer in the new epoch
    CLOSING = "closing"
    CLOSED = "closed"


OPEN_STATES = (SessionState.ESTABLISHED, SessionState.REKEYING)


@dataclass(frozen=True)
class SessionConfig:
    """What a Session is built with. Frozen: derive a changed copy with dataclasses.replace."""

    session_id: str
    initiator: bool
    identity: Identity
    window_frames: int = 128
    window_bytes: int = 128 * 1024
    chunk_bytes: int = DEFAULT_CHUNK  # largest DATA plaintext this side sends (<= MAX_CHUNK)
    heartbeat_interval: float = 0.25
    path_dead_after: float = 1.0
    rekey_interval: float = 3600.0
    rekey_frames: int = 2**24
    persist: bool = False  # record Change records for a durable store (take_changes)
    pn_block: int = 4096  # pns reserved per PnReserved record
    ack_delay: float = 0.005  # longest an ACK is held back to coalesce
    ack_every: int = 4  # ...or after this many DATA frames
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 4.0
    handshake_rto: float = 0.5  # first handshake resend interval (doubles up to 4 s)
    close_timeout: float = 1.0
    timestamp_offset: float = 0.0  # added to `now` for header timestamps (wall clock)
    max_message: int = 64 * 1024 * 1024
    peer_public: bytes | None = None  # pin the peer's identity key
    random: Callable[[int], bytes] | None = None  # handshake randomness (tests)

    def __post_init__(self) -> None:
        if not 1024 <= self.chunk_bytes <= MAX_CHUNK:
            raise ValueError(f"chunk_bytes must be 1024..{MAX_CHUNK}, got {self.chunk_bytes}")
