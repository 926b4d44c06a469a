"""The p2pmed session: handshake, keys, priorities, reliability and paths in one sans-IO object.

Shape (as aioquic): `receive(data, path_id, now)`, `datagrams_to_send(now)`,
`get_timer()`, `handle_timer(now)`, `next_event()`. No sockets, no clock.

The Session holds the state its parts share and the public API; the parts are
HandshakeDriver (handshake_driver.py), Heartbeat (heartbeat.py: paths, PING/PONG,
rekeying), Sender (sender.py), Receiver (receiver.py: the receive pipeline),
Recovery (recovery.py: ACKs, RTO, failover) and snapshot.py (restart).
Bad input never raises; it is counted in `stats` and reported as a FrameRejected event.

Durability (config.persist=True): the session records `Change`s (see
p2pmed.core.persist). An adapter with a store must, after EVERY call into the
session (send, receive, handle_timer, datagrams_to_send, add_path, close, ...):

  1. changes = session.take_changes(); store.apply(changes)   # one transaction, durable
  2. only then hand the frames returned by datagrams_to_send to the transport, and
  3. only then act on events from next_event() (and report send() ids as accepted).

So a pn block is durable before any frame using it leaves, a message is
durable before its id is reported, and a delivery is durable before the ACK
that covers it leaves. Restart: Session(config, now=..., restored=store.load()).
"""

from __future__ import annotations

import struct
from collections import deque

from p2pmed.core import snapshot as _snapshot
from p2pmed.core.config import (
    FIRST_PN,
    NUM_CLASSES,
    OPEN_STATES,
    SessionConfig,
    SessionState,
)
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.errors import CryptoError, FrameError, StateError
from p2pmed.core.events import Event, FrameRejected, SessionClosed
from p2pmed.core.frame import FrameType, MessageClass
from p2pmed.core.handshake_driver import HandshakeDriver
from p2pmed.core.heartbeat import Heartbeat
from p2pmed.core.paths import PathStatus
from p2pmed.core.persist import Change, Closed, MessageQueued, ReplayHigh, SessionSnapshot
from p2pmed.core.receiver import Receiver
from p2pmed.core.recovery import Recovery
from p2pmed.core.reliability import AckState, RecvStream, SendStream, SentFrame
from p2pmed.core.scheduler import OutMessage, Scheduler
from p2pmed.core.sender import Sender

__all__ = ["FIRST_PN", "NUM_CLASSES", "Session", "SessionConfig", "SessionState"]

_CLOSE = struct.Struct(">H")


class Session:
    def __init__(
        self, config: SessionConfig, *, now: float, restored: SessionSnapshot | None = None
    ) -> None:
        self.config = config
        self.state = SessionState.HANDSHAKING
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "frames_sent",
                "frames_received",
                "bytes_sent",
                "bytes_received",
                "data_frames_sent",
                "messages_sent",
                "messages_received",
                "messages_acked",
                "retransmits",
                "fast_retransmits",
                "rto_timeouts",
                "failover_resends",
                "duplicates",
                "duplicate_frames",
                "duplicate_handshake",
                "critical_copies",
                "acks_sent",
                "acks_received",
                "pings_sent",
                "pongs_received",
                "ratchets",
                "handshake_retransmits",
                "rejected_total",
                "rejected_state",
            ),
            0,
        )
        self.sas = ""
        self.peer_fingerprint = ""
        self.peer_public = b""
        # shared by the parts below
        self._events: deque[Event] = deque()
        self._changes: list[Change] = []
        self._persist = config.persist
        self._ts_offset = config.timestamp_offset
        # The direct path binding (docs/protocol.md, PATH_BIND): the fingerprints of our own
        # DTLS certificate and of the certificate the peer presented, as the completed DTLS
        # handshake verified them; None until a DTLS transport connected. The handshake itself
        # always carries zero fingerprints: a value parsed from SDP is never trusted.
        self._local_fp: bytes | None = None
        self._remote_fp: bytes | None = None
        # (local, remote) of recent negotiations: a PATH_BIND that crossed a renegotiation
        # names one of these and is stale, not an attack.
        self._known_fps: deque[tuple[bytes, bytes]] = deque(maxlen=4)
        # our certificates of negotiations whose DTLS has not connected yet, and the latest
        # PATH_BIND naming one of them, checked once that DTLS connects
        self._pending_local: deque[bytes] = deque(maxlen=4)
        self._held_bind: tuple[bytes, bytes] | None = None
        self._bound: tuple[bytes, bytes] | None = None
        self._confirmed = False  # the peer proved it holds the keys
        self._send: SendKeys | None = None
        self._recv: RecvKeys | None = None
        self._tx = [SendStream(c) for c in range(NUM_CLASSES)]
        self._rx = [RecvStream(c, max_message=config.max_message) for c in range(NUM_CLASSES)]
        self._retx: list[deque[SentFrame]] = [deque() for _ in range(NUM_CLASSES)]
        self._sched = Scheduler()
        self._next_index = [1] * NUM_CLASSES
        self._ack = AckState()
        self._ctrl: list[tuple[str | None, FrameType, bytes]] = []  # (path or all, type, payload)
        self._close_deadline: float | None = None
        self._close_info = (0, "")
        # the parts
        self._handshake = HandshakeDriver(self)
        self._heartbeat = Heartbeat(self)
        self._recovery = Recovery(self)
        self._sender = Sender(self)
        self._receiver = Receiver(self)
        if restored is not None:
            _snapshot.restore(self, restored, now)

    # -- public API ----------------------------------------------------------------------

    def expect_direct(self, local: bytes) -> None:
        """A direct path is being negotiated with our DTLS certificate `local` (SHA-256 of its
        DER): a peer's PATH_BIND naming it is held until that DTLS connects."""
        if len(local) != 32:
            raise ValueError("fingerprints are 32-byte SHA-256 digests")
        if local not in self._pending_local:
            self._pending_local.append(bytes(local))

    def set_fingerprints(self, local: bytes, remote: bytes) -> None:
        """Our DTLS transport connected: `local` is the SHA-256 of our certificate's DER,
        `remote` that of the certificate the peer presented in the completed DTLS handshake
        (never a value parsed from SDP). Sends a PATH_BIND once the session is open, and
        checks a held peer PATH_BIND for this connection (PathBound event, or a close as
        crypto/fingerprint)."""
        if len(local) != 32 or len(remote) != 32:
            raise ValueError("fingerprints are 32-byte SHA-256 digests")
        local, remote = bytes(local), bytes(remote)
        self._local_fp, self._remote_fp = local, remote
        self._known_fps.append((local, remote))
        if local in self._pending_local:
            self._pending_local.remove(local)
        if self.state in OPEN_STATES:
            self._queue_bind()
        held = self._held_bind
        if held is not None and (held[1] == local or held[1] not in self._pending_local):
            self._held_bind = None
            self._receiver.check_bind(held[0], held[1], "direct")

    def remember_fingerprints(self, local: bytes, remote: bytes) -> None:
        """Record a negotiation's fingerprints without binding them (e.g. an abandoned offer)."""
        if len(local) != 32 or len(remote) != 32:
            raise ValueError("fingerprints are 32-byte SHA-256 digests")
        self._known_fps.append((bytes(local), bytes(remote)))

    @property
    def bound(self) -> tuple[bytes, bytes] | None:
        """(local, remote) of the direct path whose peer PATH_BIND was verified, if any."""
        return self._bound

    def add_path(self, path_id: str, now: float, *, preferred: bool = False) -> None:
        self._heartbeat.add(path_id, now, preferred)

    def remove_path(self, path_id: str, now: float) -> None:
        self._heartbeat.remove(path_id)

    def path_status(self, path_id: str) -> PathStatus:
        return self._heartbeat.status(path_id)

    @property
    def paths(self) -> list[str]:
        return list(self._heartbeat.paths)

    def connect(self, now: float) -> None:
        """Initiator: start the handshake (frames go out on every path)."""
        if not self.config.initiator:
            raise StateError("role", "only the initiator connects")
        if self._handshake.hs is not None or self.state is not SessionState.HANDSHAKING:
            raise StateError("handshaking", "handshake already started")
        self._handshake.start(now)

    def send(self, cls: MessageClass, data: bytes, now: float) -> int:
        """Queue one application message of any size; returns its message id.

        The id is `(n << 3) | cls` where n counts this class's messages from 1; the
        receiving side reports the same id in MessageReceived.
        """
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            raise StateError("closed", "session is closing")
        c = int(cls)
        if not 0 <= c < NUM_CLASSES:
            raise ValueError("unknown message class")
        if type(data) is not bytes:
            data = bytes(data)
        index = self._next_index[c]
        self._next_index[c] = index + 1
        msg_id = (index << 3) | c
        ts = int((now + self._ts_offset) * 1e6)
        sched = self._sched
        sched.queues[c].append(OutMessage(msg_id, c, data, ts))
        sched.queued_bytes += len(data)
        self.stats["messages_sent"] += 1
        if self._persist and self._send is not None:
            self._changes.append(MessageQueued(msg_id, c, data, ts))
        return msg_id

    def close(self, now: float, code: int = 0, reason: str = "") -> None:
        if self.state is SessionState.CLOSED or self.state is SessionState.CLOSING:
            return
        code &= 0xFFFF
        if self._send is None or not self._confirmed:
            self._closed(code, reason)
            return
        self.state = SessionState.CLOSING
        self._close_info = (code, reason)
        self._queue_close(code, reason)
        self._close_deadline = now + self.config.close_timeout

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def take_changes(self) -> list[Change]:
        """Records to make durable before frames leave or events are acted on."""
        receiver = self._receiver
        if self._persist and receiver.replay.highest > receiver.replay_saved:
            receiver.replay_saved = receiver.replay.highest
            self._changes.append(ReplayHigh(receiver.replay_saved))
        changes, self._changes = self._changes, []
        return changes

    def snapshot(self) -> SessionSnapshot:
        """The full durable state right now (a store's starting point)."""
        return _snapshot.snapshot(self)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing unacked."""
        return not len(self._sched) and not any(tx.unacked for tx in self._tx)

    @property
    def inflight(self) -> tuple[int, int]:
        """(frames, plaintext bytes) sent and neither acked nor sacked."""
        return (
            sum(tx.inflight_frames for tx in self._tx),
            sum(tx.inflight_bytes for tx in self._tx),
        )

    @property
    def queued_bytes(self) -> int:
        return self._sched.queued_bytes

    # -- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.state is SessionState.CLOSED:
            return None
        times: list[float] = []
        hs_deadline = self._handshake.timer()
        if hs_deadline is not None:
            times.append(hs_deadline)
        if self._close_deadline is not None:
            times.append(self._close_deadline)
        if self._send is not None and self._confirmed:
            if self._ack.deadline is not None:
                times.append(self._ack.deadline)
            if self._recovery.rto_deadline is not None:
                times.append(self._recovery.rto_deadline)
            self._heartbeat.add_deadlines(times)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._close_deadline is not None and now >= self._close_deadline:
            self._closed(*self._close_info)
            return
        self._handshake.on_timer(now)
        if self._send is None or not self._confirmed:
            return
        ack = self._ack
        if ack.deadline is not None and now >= ack.deadline:
            ack.immediate = True
            ack.deadline = None
        self._recovery.on_timer(now)
        self._heartbeat.on_timer(now)
        if self._recv is not None:
            self._recv.expire(now)

    # -- frames out and in ---------------------------------------------------------------

    def datagrams_to_send(
        self, now: float, max_datagrams: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Frames to hand to the transports now, as (path_id, frame bytes).

        `max_datagrams` caps the DATA frames produced (what the transport can take);
        the rest waits, in priority order, for the next call.
        """
        return self._sender.datagrams(now, max_datagrams)

    def receive(self, data: bytes, path_id: str, now: float) -> None:
        """Process one frame from a transport. Never raises on bad input."""
        st = self.stats
        st["frames_received"] += 1
        st["bytes_received"] += len(data)
        if type(data) is not bytes:
            data = bytes(data)
        try:
            self._receiver.process(data, path_id, now)
        except (FrameError, CryptoError, StateError) as e:
            self._reject(e.reason, e.kind, path_id)
        except Exception:  # a bug, not bad input: count it loudly, never crash the node
            self._reject("internal", "frame", path_id)

    # -- shared by the parts -------------------------------------------------------------

    def _take_pn(self) -> int:
        return self._sender.take_pn()

    def _reject(self, reason: str, kind: str, path_id: str) -> None:
        st = self.stats
        key = "rejected_state" if kind == "state" else f"rejected_{kind}_{reason}"
        st[key] = st.get(key, 0) + 1
        st["rejected_total"] += 1
        self._events.append(FrameRejected(reason, kind, path_id))

    def _queue_bind(self) -> None:
        if self._local_fp is None or self._remote_fp is None:
            return
        bind = b"\x06direct" + self._local_fp + self._remote_fp
        self._ctrl.append((None, FrameType.PATH_BIND, bind))

    def _queue_close(self, code: int, reason: str) -> None:
        payload = _CLOSE.pack(code) + reason.encode("utf-8")[:1024]
        self._ctrl.append((None, FrameType.CLOSE, payload))

    def _confirm(self, now: float) -> None:
        self._confirmed = True
        self._handshake.stop()
        self._heartbeat.revive_all(now)
        self._heartbeat.beat(now)

    def _on_close(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise FrameError("payload", "CLOSE payload too short")
        (code,) = _CLOSE.unpack_from(payload)
        reason = payload[2:].decode("utf-8", "replace")
        if self.state is SessionState.CLOSING:
            self._closed(*self._close_info)
            return
        self._queue_close(code, "")
        self._closed(code, reason)

    def _abort(self, code: int, reason: str) -> None:
        """Close at once on a peer's protocol violation: one CLOSE out, nothing else."""
        if self.state is SessionState.CLOSED:
            return
        self._queue_close(code, reason)
        self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> None:
        self.state = SessionState.CLOSED
        self._close_deadline = None
        self._handshake.out = None
        self._close_info = (code, reason)
        self._events.append(SessionClosed(code, reason))
        if self._persist and self._send is not None:
            self._changes.append(Closed(code, reason))
