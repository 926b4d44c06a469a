"""What a Session needs to survive a crash: change records and the snapshot they build.

The Session emits `Change` records (Session.take_changes()); a store applies them
atomically and in order, and gives back a `SessionSnapshot` on restart. The
snapshot's own `apply` is the reference semantics (and the in-memory store used
by tests); p2pmed.store.sqlite implements the same on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pmed.core.frame import NUM_CLASSES as NUM_CLASSES


@dataclass(frozen=True, slots=True)
class Established:
    """First record of a session: identity of the peer and the initial key states."""

    session_id: str
    initiator: bool
    sas: str
    peer_fingerprint: str
    peer_public: bytes


@dataclass(frozen=True, slots=True)
class KeysChanged:
    send_keys: dict[str, object] | None
    recv_keys: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class PnReserved:
    """No pn at or above `ceiling` is used before this record is durable."""

    ceiling: int


@dataclass(frozen=True, slots=True)
class ReplayHigh:
    """Highest pn accepted from the peer (replays at or below it are refused after restart)."""

    pn: int


@dataclass(frozen=True, slots=True)
class MessageQueued:
    msg_id: int
    cls: int
    data: bytes
    ts_us: int


@dataclass(frozen=True, slots=True)
class FrameAdded:
    """A DATA frame got its seq; `done` messages left the queue, `progress` is a partial one."""

    cls: int
    seq: int
    flags: int
    payload: bytes
    ts_us: int
    msg_ids: tuple[int, ...]
    progress: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class FramesAcked:
    """Every frame of `cls` below seq `below` was delivered by the peer."""

    cls: int
    below: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """Receive state of `cls` after handing `messages` (msg_id, seq, ts_us, data) over."""

    cls: int
    next_seq: int
    delivered: int
    messages: tuple[tuple[int, int, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Closed:
    code: int
    reason: str


Change = (
    Established
    | KeysChanged
    | PnReserved
    | ReplayHigh
    | MessageQueued
    | FrameAdded
    | FramesAcked
    | Delivered
    | Closed
)


@dataclass(slots=True)
class StoredFrame:
    cls: int
    seq: int
    flags: int
    payload: bytes
    ts_us: int
    msg_ids: tuple[int, ...]


@dataclass(slots=True)
class StoredMessage:
    msg_id: int
    cls: int
    data: bytes
    ts_us: int
    offset: int = 0


@dataclass(slots=True)
class SessionSnapshot:
    """Durable state of one established session."""

    session_id: str = ""
    initiator: bool = False
    sas: str = ""
    peer_fingerprint: str = ""
    peer_public: bytes = b""
    send_keys: dict[str, object] = field(default_factory=dict)
    recv_keys: dict[str, object] = field(default_factory=dict)
    pn_ceiling: int = 0
    replay_high: int = -1
    send_next_seq: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    send_next_index: list[int] = field(default_factory=lambda: [1] * NUM_CLASSES)
    recv_next_seq: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    recv_delivered: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    frames: dict[tuple[int, int], StoredFrame] = field(default_factory=dict)
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    closed: tuple[int, str] | None = None
    established: bool = False

    def apply(self, changes: list[Change]) -> None:
        for ch in changes:
            apply_change(self, ch)


def message_index(msg_id: int) -> int:
    return msg_id >> 3


def apply_change(s: SessionSnapshot, ch: Change) -> None:
    if isinstance(ch, MessageQueued):
        s.messages[ch.msg_id] = StoredMessage(ch.msg_id, ch.cls, ch.data, ch.ts_us)
        s.send_next_index[ch.cls] = max(s.send_next_index[ch.cls], message_index(ch.msg_id) + 1)
    elif isinstance(ch, FrameAdded):
        s.frames[(ch.cls, ch.seq)] = StoredFrame(
            ch.cls, ch.seq, ch.flags, ch.payload, ch.ts_us, ch.msg_ids
        )
        s.send_next_seq[ch.cls] = max(s.send_next_seq[ch.cls], ch.seq + 1)
        for mid in ch.msg_ids:
            s.messages.pop(mid, None)
        if ch.progress is not None:
            mid, offset = ch.progress
            msg = s.messages.get(mid)
            if msg is not None:
                msg.offset = offset
    elif isinstance(ch, FramesAcked):
        for key in [k for k in s.frames if k[0] == ch.cls and k[1] < ch.below]:
            del s.frames[key]
    elif isinstance(ch, Delivered):
        s.recv_next_seq[ch.cls] = ch.next_seq
        s.recv_delivered[ch.cls] = ch.delivered
    elif isinstance(ch, ReplayHigh):
        s.replay_high = max(s.replay_high, ch.pn)
    elif isinstance(ch, PnReserved):
        s.pn_ceiling = max(s.pn_ceiling, ch.ceiling)
    elif isinstance(ch, KeysChanged):
        if ch.send_keys is not None:
            s.send_keys = ch.send_keys
        if ch.recv_keys is not None:
            s.recv_keys = ch.recv_keys
    elif isinstance(ch, Established):
        s.session_id = ch.session_id
        s.initiator = ch.initiator
        s.sas = ch.sas
        s.peer_fingerprint = ch.peer_fingerprint
        s.peer_public = ch.peer_public
        s.established = True
    elif isinstance(ch, Closed):
        s.closed = (ch.code, ch.reason)
