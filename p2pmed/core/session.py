"""The p2pmed session: handshake, keys, priorities, reliability and paths in one sans-IO object.

Shape (as aioquic): `receive(data, path_id, now)`, `datagrams_to_send(now)`,
`get_timer()`, `handle_timer(now)`, `next_event()`. No sockets, no clock.

Receive pipeline: frame.decode (CRC first) -> state check -> replay check ->
AEAD open -> replay accept -> process. Bad input never raises; it is counted in
`stats` and reported as a FrameRejected event.

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

import enum
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from p2pmed.core import frame as _frame
from p2pmed.core.crypto import RecvKeys, ReplayWindow, SendKeys
from p2pmed.core.errors import CryptoError, FrameError, StateError
from p2pmed.core.events import (
    Event,
    FrameRejected,
    HandshakeCompleted,
    MessageAcked,
    MessageReceived,
    PathDown,
    PathQuality,
    PathUp,
    SessionClosed,
)
from p2pmed.core.frame import HANDSHAKE_TYPES, Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import HANDSHAKE_PN, Handshake
from p2pmed.core.identity import Identity
from p2pmed.core.paths import Path, PathStatus, live_order
from p2pmed.core.persist import (
    Change,
    Closed,
    Delivered,
    Established,
    FrameAdded,
    FramesAcked,
    KeysChanged,
    MessageQueued,
    PnReserved,
    ReplayHigh,
    SessionSnapshot,
    StoredFrame,
    StoredMessage,
)
from p2pmed.core.reliability import (
    AckState,
    RecvStream,
    RttEstimator,
    SendStream,
    SentFrame,
    decode_ack,
    encode_ack,
)
from p2pmed.core.scheduler import OutMessage, Scheduler

NUM_CLASSES = 5
FIRST_PN = 4  # pn 0..3 belong to the plaintext handshake frames
_FLAGS = [Flags(i) for i in range(8)]
_CLASSES = list(MessageClass)
_DATA = FrameType.DATA
_ZERO_FP = bytes(32)
_PING = struct.Struct(">Q")
_CLOSE = struct.Struct(">H")


class SessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    REKEYING = "rekeying"  # send keys ratcheted; waiting for an answer in the new epoch
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN_STATES = (SessionState.ESTABLISHED, SessionState.REKEYING)


@dataclass
class SessionConfig:
    session_id: str
    initiator: bool
    identity: Identity
    window_frames: int = 128
    window_bytes: int = 128 * 1024
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
        self._events: deque[Event] = deque()
        self._changes: list[Change] = []
        self._persist = config.persist
        self._ts_offset = config.timestamp_offset
        self._paths: dict[str, Path] = {}
        self._preferred: str | None = None
        self._direct_seen = False
        self._local_fp = _ZERO_FP
        self._remote_fp = _ZERO_FP
        self._bind_after_handshake = False
        # handshake
        self._hs: Handshake | None = None
        self._hs_out: bytes | None = None
        self._hs_send_now = False
        self._hs_deadline: float | None = None
        self._hs_interval = config.handshake_rto
        self._hs_seen: dict[int, bytes] = {}
        self._confirmed = False  # the peer proved it holds the keys
        self.sas = ""
        self.peer_fingerprint = ""
        self.peer_public = b""
        # keys and packet numbers
        self._send: SendKeys | None = None
        self._recv: RecvKeys | None = None
        self._replay = ReplayWindow()
        self._replay_saved = -1
        self._recv_epoch_saved = 0
        self._recent: list[tuple[int, bytes] | None] = [None] * 1024
        self._next_pn = FIRST_PN
        self._pn_ceiling = FIRST_PN
        # reliability
        self._tx = [SendStream(c) for c in range(NUM_CLASSES)]
        self._rx = [RecvStream(c, max_message=config.max_message) for c in range(NUM_CLASSES)]
        self._retx: list[deque[SentFrame]] = [deque() for _ in range(NUM_CLASSES)]
        self._sched = Scheduler()
        self._next_index = [1] * NUM_CLASSES
        self._rtt = RttEstimator(
            initial=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self._rto_deadline: float | None = None
        self._sent_pn: dict[int, float] = {}
        self._largest_acked_pn = -1
        self._ack = AckState()
        self._ctrl: list[tuple[str | None, FrameType, bytes]] = []
        self._pings: dict[int, tuple[str, float, int]] = {}
        self._next_ping_id = 1
        self._next_heartbeat: float | None = None
        self._rekey_epoch = 0
        self._close_deadline: float | None = None
        self._close_info = (0, "")
        reserve_f = max(1, config.window_frames // 8)
        reserve_b = max(1024, config.window_bytes // 8)
        self._limit_critical = (config.window_frames, config.window_bytes)
        self._limit_other = (
            max(1, config.window_frames - reserve_f),
            max(1024, config.window_bytes - reserve_b),
        )
        if restored is not None:
            self._restore(restored, now)

    # -- public API ----------------------------------------------------------------------

    def set_fingerprints(self, local: bytes, remote: bytes) -> None:
        """DTLS certificate fingerprints (32 raw bytes each) of the current direct path."""
        if len(local) != 32 or len(remote) != 32:
            raise ValueError("fingerprints are 32-byte SHA-256 digests")
        self._local_fp, self._remote_fp = bytes(local), bytes(remote)
        if self.state in _OPEN_STATES:
            self._queue_bind()
        elif self._hs is not None and not self._hs.complete:
            try:
                self._hs.set_fingerprints(self._local_fp, self._remote_fp)
            except CryptoError:  # the handshake already signed the old ones: bind afterwards
                self._bind_after_handshake = True

    def _queue_bind(self) -> None:
        bind = b"\x06direct" + self._local_fp + self._remote_fp
        self._ctrl.append((None, FrameType.PATH_BIND, bind))

    def add_path(self, path_id: str, now: float, *, preferred: bool = False) -> None:
        path = self._paths.get(path_id)
        if path is None:
            path = Path(path_id, True, now)
            self._paths[path_id] = path
            self._events.append(PathUp(path_id))
        else:
            path.last_pong = now
            if not path.alive:
                path.alive = True
                self._events.append(PathUp(path_id))
        if preferred or self._preferred is None:
            self._preferred = path_id
        if path_id.startswith("direct"):
            if self._direct_seen and self.state in _OPEN_STATES:
                self._ratchet(now)
            self._direct_seen = True
        if self._hs_out is not None:
            self._hs_send_now = True
        if self._confirmed and self.state in _OPEN_STATES:
            self._queue_ping(path_id, now)

    def remove_path(self, path_id: str, now: float) -> None:
        path = self._paths.pop(path_id, None)
        if path is None:
            return
        if self._preferred == path_id:
            self._preferred = None
        if path.alive:
            self._events.append(PathDown(path_id))
        self._reroute()

    def path_status(self, path_id: str) -> PathStatus:
        p = self._paths.get(path_id)
        return PathStatus(path_id, False, None, 1.0) if p is None else p.status()

    @property
    def paths(self) -> list[str]:
        return list(self._paths)

    def connect(self, now: float) -> None:
        """Initiator: start the handshake (frames go out on every path)."""
        if not self.config.initiator:
            raise StateError("role", "only the initiator connects")
        if self._hs is not None or self.state is not SessionState.HANDSHAKING:
            raise StateError("handshaking", "handshake already started")
        hs = self._new_handshake()
        step = hs.start()
        assert step is not None
        self._set_hs_out(step[0], step[1], now)

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
        self._ctrl.append((None, FrameType.CLOSE, _close_payload(code, reason)))
        self._close_deadline = now + self.config.close_timeout

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def take_changes(self) -> list[Change]:
        """Records to make durable before frames leave or events are acted on."""
        if self._persist and self._replay.highest > self._replay_saved:
            self._replay_saved = self._replay.highest
            self._changes.append(ReplayHigh(self._replay_saved))
        changes, self._changes = self._changes, []
        return changes

    def snapshot(self) -> SessionSnapshot:
        """The full durable state right now (a store's starting point)."""
        s = SessionSnapshot()
        if self._send is None or self._recv is None:
            return s
        s.established = True
        s.session_id = self.config.session_id
        s.initiator = self.config.initiator
        s.sas, s.peer_fingerprint, s.peer_public = self.sas, self.peer_fingerprint, self.peer_public
        s.send_keys = self._send.export_state()
        s.recv_keys = self._recv.export_state()
        s.pn_ceiling = self._pn_ceiling
        s.replay_high = self._replay.highest
        for c in range(NUM_CLASSES):
            tx, rx = self._tx[c], self._rx[c]
            s.send_next_seq[c] = tx.next_seq
            s.send_next_index[c] = self._next_index[c]
            s.recv_next_seq[c] = rx.ack_point
            s.recv_delivered[c] = rx.delivered
            for f in tx.unacked.values():
                s.frames[(c, f.seq)] = StoredFrame(c, f.seq, f.flags, f.payload, f.ts_us, f.msg_ids)
            for m in self._sched.queues[c]:
                s.messages[m.msg_id] = StoredMessage(m.msg_id, c, m.data, m.ts_us, m.offset)
        if self.state is SessionState.CLOSED:
            s.closed = self._close_info
        return s

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
        if self._hs_out is not None and self._hs_deadline is not None:
            times.append(self._hs_deadline)
        if self._close_deadline is not None:
            times.append(self._close_deadline)
        if self._send is not None and self._confirmed:
            if self._ack.deadline is not None:
                times.append(self._ack.deadline)
            if self._rto_deadline is not None:
                times.append(self._rto_deadline)
            if self._next_heartbeat is not None:
                times.append(self._next_heartbeat)
            dead = self.config.path_dead_after
            times.extend(p.last_pong + dead for p in self._paths.values() if p.alive)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.CLOSED:
            return
        if self._close_deadline is not None and now >= self._close_deadline:
            self._closed(*self._close_info)
            return
        if self._hs_out is not None and self._hs_deadline is not None and now >= self._hs_deadline:
            self._hs_send_now = True
            self._hs_deadline = None
            self._hs_interval = min(self._hs_interval * 2, 4.0)
            self.stats["handshake_retransmits"] += 1
        if self._send is None or not self._confirmed:
            return
        ack = self._ack
        if ack.deadline is not None and now >= ack.deadline:
            ack.immediate = True
            ack.deadline = None
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._on_rto(now)
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._heartbeat(now)
        dead = self.config.path_dead_after
        for p in list(self._paths.values()):
            if p.alive and now >= p.last_pong + dead:
                p.alive = False
                self._events.append(PathDown(p.path_id))
                self._reroute()
        if self._recv is not None:
            self._recv.expire(now)

    # -- sending -------------------------------------------------------------------------

    def datagrams_to_send(
        self, now: float, max_datagrams: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Frames to hand to the transports now, as (path_id, frame bytes).

        `max_datagrams` caps the DATA frames produced (what the transport can take);
        the rest waits, in priority order, for the next call.
        """
        out: list[tuple[str, bytes]] = []
        live = self._live_paths()
        if self._hs_send_now and self._hs_out is not None:
            targets = live or list(self._paths)
            if targets:
                self._hs_send_now = False
                self._hs_deadline = now + self._hs_interval
                for pid in targets:
                    out.append((pid, self._hs_out))
        if self._send is None or not self._confirmed:
            return self._count_out(out)
        if self._ctrl:
            self._send_ctrl(now, live, out)
        if self.state is SessionState.CLOSED:
            return self._count_out(out)
        ack = self._ack
        if ack.immediate and live:
            self._send_ack(now, live, out)
        if self.state is SessionState.CLOSING or not live:
            return self._count_out(out)
        preferred = [live[0]]
        budget = -1 if max_datagrams is None else max_datagrams
        sched = self._sched
        tx_all = self._tx
        for c in range(NUM_CLASSES):
            if budget == 0:
                break
            targets = live if c == 0 else preferred
            lim_f, lim_b = self._limit_critical if c == 0 else self._limit_other
            retx = self._retx[c]
            tx = tx_all[c]
            while retx and budget != 0:
                f = retx[0]
                if f.seq not in tx.unacked:
                    retx.popleft()
                    f.queued = False
                    continue
                if not f.in_flight and (
                    self._inflight_frames() >= lim_f
                    or self._inflight_bytes() + len(f.payload) > lim_b
                ):
                    break
                retx.popleft()
                f.queued = False
                self.stats["retransmits"] += 1
                self._transmit(f, now, targets, out)
                budget -= 1
            if not sched.queues[c]:
                continue
            while budget != 0:
                frames = self._inflight_frames()
                if frames >= lim_f:
                    break
                room = lim_b - self._inflight_bytes()
                if room <= 0:
                    break
                plan = sched.build(c, room)
                if plan is None:
                    break
                seq = tx.next_seq
                tx.next_seq = seq + 1
                f = SentFrame(c, seq, plan.flags, plan.payload, plan.ts_us, plan.done)
                tx.unacked[seq] = f
                if self._persist:
                    self._changes.append(
                        FrameAdded(
                            c, seq, plan.flags, plan.payload, plan.ts_us, plan.done, plan.progress
                        )
                    )
                self._transmit(f, now, targets, out)
                budget -= 1
                if not sched.queues[c]:
                    break
        return self._count_out(out)

    def _count_out(self, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if out:
            st = self.stats
            st["frames_sent"] += len(out)
            st["bytes_sent"] += sum(len(b) for _, b in out)
        return out

    def _inflight_frames(self) -> int:
        t = self._tx
        return (
            t[0].inflight_frames
            + t[1].inflight_frames
            + t[2].inflight_frames
            + t[3].inflight_frames
            + t[4].inflight_frames
        )

    def _inflight_bytes(self) -> int:
        t = self._tx
        return (
            t[0].inflight_bytes
            + t[1].inflight_bytes
            + t[2].inflight_bytes
            + t[3].inflight_bytes
            + t[4].inflight_bytes
        )

    def _transmit(
        self, f: SentFrame, now: float, targets: list[str], out: list[tuple[str, bytes]]
    ) -> None:
        c = f.cls
        pn = self._take_pn()
        assert self._send is not None
        wire = self._send.seal(
            Header(
                _DATA,
                _FLAGS[f.flags],
                _CLASSES[c],
                0,
                pn,
                f.seq,
                self._rx[c].ack_point,
                f.ts_us,
                0,
            ),
            f.payload,
        )
        f.pn = pn
        f.sent_at = now
        f.sends += 1
        f.paths = tuple(targets)
        self._tx[c].mark_sent(f)
        self._sent_pn[pn] = now
        for pid in targets:
            out.append((pid, wire))
        self.stats["data_frames_sent"] += 1
        if len(targets) > 1:
            self.stats["critical_copies"] += len(targets) - 1
        if self._rto_deadline is None:
            self._rto_deadline = now + self._rtt.timeout()

    def _take_pn(self) -> int:
        pn = self._next_pn
        if pn >= self._pn_ceiling:
            self._pn_ceiling = pn + self.config.pn_block
            if self._persist:
                assert self._send is not None
                self._changes.append(PnReserved(self._pn_ceiling))
                self._changes.append(KeysChanged(self._send.export_state(), None))
        self._next_pn = pn + 1
        return pn

    def _seal_ctrl(self, ftype: FrameType, payload: bytes, now: float) -> bytes:
        assert self._send is not None
        pn = self._take_pn()
        ts = int((now + self.config.timestamp_offset) * 1e6)
        return self._send.seal(
            Header(ftype, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, ts, 0), payload
        )

    def _send_ctrl(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        ctrl, self._ctrl = self._ctrl, []
        for path_id, ftype, payload in ctrl:
            if path_id is None:
                targets = live or list(self._paths)
            elif path_id in self._paths:
                targets = [path_id]
            else:
                continue
            if not targets:
                continue
            wire = self._seal_ctrl(ftype, payload, now)
            for pid in targets:
                out.append((pid, wire))
            if ftype is FrameType.PING:
                self.stats["pings_sent"] += 1

    def _send_ack(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        ack = self._ack
        entries = [
            (c, rx.ack_point, rx.ranges())
            for c, rx in enumerate(self._rx)
            if rx.next_seq or rx.buffer
        ]
        delay = int((now - ack.largest_at) * 1e6) if ack.largest_pn >= 0 else 0
        payload = encode_ack(max(ack.largest_pn, 0), max(delay, 0), entries)
        wire = self._seal_ctrl(FrameType.ACK, payload, now)
        if ack.critical:
            targets = live
        elif ack.path in self._paths and self._paths[ack.path].alive:
            targets = [ack.path]  # it just worked in one direction at least
        else:
            targets = live[:1]
        for pid in targets:
            out.append((pid, wire))
        ack.immediate = False
        ack.critical = False
        ack.deadline = None
        ack.unacked_frames = 0
        self.stats["acks_sent"] += 1

    def _live_paths(self) -> list[str]:
        return live_order(self._paths, self._preferred)

    def _queue_ping(self, path_id: str, now: float) -> None:
        pid = self._next_ping_id
        self._next_ping_id = pid + 1
        assert self._send is not None
        self._pings[pid] = (path_id, now, self._send.epoch)
        self._ctrl.append((path_id, FrameType.PING, _PING.pack(pid)))

    def _heartbeat(self, now: float) -> None:
        cfg = self.config
        self._next_heartbeat = now + cfg.heartbeat_interval
        pings = self._pings
        while pings:
            pid = next(iter(pings))
            path_id, sent_at, _ = pings[pid]
            if now - sent_at < cfg.path_dead_after:
                break
            del pings[pid]
            p = self._paths.get(path_id)
            if p is not None:
                p.history.append(False)
        assert self._send is not None
        if self.state in _OPEN_STATES and self._send.needs_ratchet(
            now, max_frames=cfg.rekey_frames, max_age=cfg.rekey_interval
        ):
            self._ratchet(now)
        if self.state in _OPEN_STATES:
            for path_id in self._paths:
                self._queue_ping(path_id, now)
        elif self.state is SessionState.CLOSING:  # CLOSE is unreliable: repeat until answered
            self._ctrl.append((None, FrameType.CLOSE, _close_payload(*self._close_info)))

    def _ratchet(self, now: float) -> None:
        assert self._send is not None
        self._send.ratchet(now)
        self.stats["ratchets"] += 1
        self._rekey_epoch = self._send.epoch
        self.state = SessionState.REKEYING
        if self._persist:
            self._changes.append(KeysChanged(self._send.export_state(), None))
        for path_id in self._paths:
            self._queue_ping(path_id, now)

    def _on_rto(self, now: float) -> None:
        timeout = self._rtt.timeout()
        self.stats["rto_timeouts"] += 1
        for c, tx in enumerate(self._tx):
            for f in tx.unacked.values():
                if not f.sacked and not f.queued and f.sends and f.sent_at + timeout <= now:
                    f.queued = True
                    self._retx[c].append(f)
        self._rtt.on_timeout()
        sent = self._sent_pn  # send times for RTT samples; bounded while no ACK comes back
        while len(sent) > 4096:
            del sent[next(iter(sent))]
        self._rto_deadline = (
            now + self._rtt.timeout() if any(tx.unacked for tx in self._tx) else None
        )

    def _arm_rto(self) -> None:
        oldest: float | None = None
        for tx in self._tx:
            for f in tx.unacked.values():
                if f.in_flight and not f.queued and (oldest is None or f.sent_at < oldest):
                    oldest = f.sent_at
        self._rto_deadline = None if oldest is None else oldest + self._rtt.timeout()

    def _reroute(self) -> None:
        """Resend at once every unacked frame that was only on paths now dead or gone."""
        alive = {pid for pid, p in self._paths.items() if p.alive}
        for c, tx in enumerate(self._tx):
            for f in tx.unacked.values():
                if f.queued or f.sacked or not f.sends:
                    continue
                if not any(pid in alive for pid in f.paths):
                    f.queued = True
                    self._retx[c].append(f)
                    self.stats["failover_resends"] += 1
        if self._ack.largest_pn >= 0:
            self._ack.immediate = True

    # -- receiving -----------------------------------------------------------------------

    def receive(self, data: bytes, path_id: str, now: float) -> None:
        """Process one frame from a transport. Never raises on bad input."""
        st = self.stats
        st["frames_received"] += 1
        st["bytes_received"] += len(data)
        if type(data) is not bytes:
            data = bytes(data)
        try:
            self._receive(data, path_id, now)
        except (FrameError, CryptoError, StateError) as e:
            self._reject(e.reason, e.kind, path_id)
        except Exception:  # a bug, not bad input: count it loudly, never crash the node
            self._reject("internal", "frame", path_id)

    def _reject(self, reason: str, kind: str, path_id: str) -> None:
        st = self.stats
        key = "rejected_state" if kind == "state" else f"rejected_{kind}_{reason}"
        st[key] = st.get(key, 0) + 1
        st["rejected_total"] += 1
        self._events.append(FrameRejected(reason, kind, path_id))

    def _receive(self, data: bytes, path_id: str, now: float) -> None:
        header, payload = _frame.decode(data)
        ftype = header.type
        if ftype in HANDSHAKE_TYPES:
            self._on_handshake(header, payload, bytes(data), path_id, now)
            return
        state = self.state
        recv = self._recv
        if recv is None or state is SessionState.HANDSHAKING or state is SessionState.CLOSED:
            raise StateError("state", f"{ftype.name} in state {state.value}")
        if state is SessionState.CLOSING and ftype is FrameType.PATH_BIND:
            raise StateError("state", "PATH_BIND while closing")
        pn = header.pn
        crc = data[-4:]
        try:
            self._replay.check(pn)
        except CryptoError:
            if self._recent[pn & 1023] == (pn, crc):
                self.stats["duplicate_frames"] += 1  # a copy (other path, network dup)
                return
            raise
        plaintext = recv.open(header, data, now)
        self._replay.accept(pn)
        self._recent[pn & 1023] = (pn, crc)
        if self._persist and recv.epoch != self._recv_epoch_saved:
            self._recv_epoch_saved = recv.epoch
            self._changes.append(KeysChanged(None, recv.export_state()))
        if not self._confirmed:
            self._confirm(now)
        if ftype is _DATA:
            self._on_data(header, plaintext, path_id, now)
        elif ftype is FrameType.ACK:
            self._on_ack(plaintext, now)
        elif ftype is FrameType.PING:
            if len(plaintext) != 8:
                raise FrameError("payload", "PING payload is 8 bytes")
            self._ctrl.append((path_id, FrameType.PONG, plaintext))
        elif ftype is FrameType.PONG:
            self._on_pong(plaintext, path_id, now)
        elif ftype is FrameType.CLOSE:
            self._on_close(plaintext)
        elif ftype is FrameType.PATH_BIND:
            self._on_path_bind(plaintext, path_id)

    def _confirm(self, now: float) -> None:
        self._confirmed = True
        self._hs_out = None
        self._hs_deadline = None
        for p in self._paths.values():
            p.last_pong = now
        self._heartbeat(now)

    def _on_data(self, header: Header, payload: bytes, path_id: str, now: float) -> None:
        c = int(header.cls)
        tx = self._tx[c]
        if tx.unacked and header.ack > next(iter(tx.unacked)):
            self._on_cumulative(c, header.ack)
            self._arm_rto()
        rx = self._rx[c]
        ack = self._ack
        pn = header.pn
        if pn > ack.largest_pn:
            ack.largest_pn = pn
            ack.largest_at = now
        ack.path = path_id
        seq = header.seq
        status = rx.accepts(seq)
        if status == 0:
            self.stats["duplicates"] += 1
            ack.immediate = True
            return
        if status < 0:
            raise StateError("seq_range", f"seq {seq} too far ahead")
        if seq == rx.next_seq and not rx.buffer:
            rx.next_seq = seq + 1
            self._deliver(c, rx, [(seq, int(header.flags), payload, header.timestamp_us)], path_id)
        else:
            rx.push(seq, int(header.flags), payload, header.timestamp_us)
            ready = rx.pop_ready()
            if ready:
                self._deliver(c, rx, ready, path_id)
            ack.immediate = True  # a gap (or its repair): tell the sender now
        ack.unacked_frames += 1
        if c == 0:
            ack.immediate = True
            ack.critical = True
        elif ack.unacked_frames >= self.config.ack_every:
            ack.immediate = True
        elif ack.deadline is None:
            ack.deadline = now + self.config.ack_delay

    def _deliver(
        self, c: int, rx: RecvStream, frames: list[tuple[int, int, bytes, int]], path_id: str
    ) -> None:
        cls = _CLASSES[c]
        events = self._events
        persist = self._persist
        stored: list[tuple[int, int, int, bytes]] = []
        count = 0
        for seq, flags, payload, ts in frames:
            msgs = rx.messages(seq, flags, payload)
            if msgs is None:
                self._reject("payload", "frame", path_id)
                continue
            for m in msgs:
                n = rx.delivered + 1
                rx.delivered = n
                mid = (n << 3) | c
                events.append(MessageReceived(mid, cls, m, seq, ts, path_id))
                if persist:
                    stored.append((mid, seq, ts, m))
            count += len(msgs)
        self.stats["messages_received"] += count
        if persist:
            self._changes.append(Delivered(c, rx.ack_point, rx.delivered, tuple(stored)))

    def _on_ack(self, payload: bytes, now: float) -> None:
        largest_pn, delay_us, entries = decode_ack(payload)
        self.stats["acks_received"] += 1
        fresh = largest_pn >= self._largest_acked_pn
        if largest_pn > self._largest_acked_pn:
            sent_at = self._sent_pn.get(largest_pn)
            if sent_at is not None:
                sample = now - sent_at
                delay = delay_us / 1e6
                if sample > delay:
                    sample -= delay
                self._rtt.sample(sample)
            self._largest_acked_pn = largest_pn
            sent = self._sent_pn
            while sent:
                first = next(iter(sent))
                if first > largest_pn:
                    break
                del sent[first]
        progress = False
        for c, cumulative, ranges in entries:
            if self._on_cumulative(c, cumulative):
                progress = True
            if fresh:
                for f in self._tx[c].on_ranges(ranges):
                    f.queued = True
                    self._retx[c].append(f)
                    self.stats["fast_retransmits"] += 1
        if progress:
            self._rtt.backoff = 1
        self._arm_rto()

    def _on_cumulative(self, c: int, cumulative: int) -> bool:
        done = self._tx[c].on_cumulative(cumulative)
        if not done:
            return False
        cls = _CLASSES[c]
        events = self._events
        n = 0
        for f in done:
            for mid in f.msg_ids:
                events.append(MessageAcked(mid, cls))
                n += 1
        self.stats["messages_acked"] += n
        if self._persist:
            self._changes.append(FramesAcked(c, done[-1].seq + 1))
        return True

    def _on_pong(self, payload: bytes, path_id: str, now: float) -> None:
        if len(payload) != 8:
            raise FrameError("payload", "PONG payload is 8 bytes")
        (ping_id,) = _PING.unpack(payload)
        info = self._pings.get(ping_id)
        if info is None or info[0] != path_id:
            return  # late (already counted as lost) or unknown
        del self._pings[ping_id]
        self.stats["pongs_received"] += 1
        _, sent_at, epoch = info
        p = self._paths.get(path_id)
        if p is not None:
            p.on_pong(now - sent_at, now)
            if not p.alive:
                p.alive = True
                self._events.append(PathUp(path_id))
            self._events.append(PathQuality(path_id, p.srtt or 0.0, p.loss()))
        if self.state is SessionState.REKEYING and epoch >= self._rekey_epoch:
            self.state = SessionState.ESTABLISHED

    def _on_close(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise FrameError("payload", "CLOSE payload too short")
        (code,) = _CLOSE.unpack_from(payload)
        reason = payload[2:].decode("utf-8", "replace")
        if self.state is SessionState.CLOSING:
            self._closed(*self._close_info)
            return
        self._ctrl.append((None, FrameType.CLOSE, _close_payload(code, "")))
        self._closed(code, reason)

    def _on_path_bind(self, payload: bytes, path_id: str) -> None:
        n = payload[0] if payload else 0
        if not payload or len(payload) != 1 + n + 64:
            raise FrameError("payload", "malformed PATH_BIND")
        fp_local = payload[1 + n : 33 + n]
        fp_remote = payload[33 + n :]
        if fp_local != self._remote_fp or fp_remote != self._local_fp:
            raise CryptoError("fingerprint", "PATH_BIND fingerprints do not match the SDP")
        self.stats["path_binds"] = self.stats.get("path_binds", 0) + 1

    def _closed(self, code: int, reason: str) -> None:
        self.state = SessionState.CLOSED
        self._close_deadline = None
        self._hs_out = None
        self._close_info = (code, reason)
        self._events.append(SessionClosed(code, reason))
        if self._persist and self._send is not None:
            self._changes.append(Closed(code, reason))

    # -- handshake -----------------------------------------------------------------------

    def _new_handshake(self) -> Handshake:
        cfg = self.config
        self._hs = Handshake(
            cfg.identity,
            initiator=cfg.initiator,
            session_id=cfg.session_id,
            local_fp=self._local_fp,
            remote_fp=self._remote_fp,
            peer_public=cfg.peer_public,
            random=os.urandom if cfg.random is None else cfg.random,
        )
        return self._hs

    def _set_hs_out(self, ftype: FrameType, payload: bytes, now: float) -> None:
        ts = int((now + self.config.timestamp_offset) * 1e6)
        header = Header(
            ftype, Flags.NONE, MessageClass.CRITICAL, 0, HANDSHAKE_PN[ftype], 0, 0, ts, len(payload)
        )
        self._hs_out = _frame.encode(header, payload)
        self._hs_send_now = True
        self._hs_interval = self.config.handshake_rto

    def _expected_hs(self) -> FrameType | None:
        hs = self._hs
        if self.config.initiator:
            if hs is None:
                return None
            return {"wait_reply": FrameType.HS_REPLY, "wait_confirm": FrameType.HS_CONFIRM}.get(
                hs.state
            )
        if hs is None or hs.state == "wait_commit":
            return FrameType.HS_COMMIT
        return FrameType.HS_REVEAL if hs.state == "wait_reveal" else None

    def _on_handshake(
        self, header: Header, payload: bytes, data: bytes, path_id: str, now: float
    ) -> None:
        ftype = header.type
        seen = self._hs_seen.get(ftype)
        if seen is not None and self.state is not SessionState.CLOSED:
            if seen != data:
                raise StateError("handshake", f"a different {ftype.name} after one was accepted")
            # a copy from the other path or a resend; our own resend timer answers resends
            self.stats["duplicate_handshake"] += 1
            return
        if self.state is not SessionState.HANDSHAKING:
            raise StateError("state", f"{ftype.name} in state {self.state.value}")
        if ftype != self._expected_hs():
            raise StateError("handshake", f"unexpected {ftype.name}")
        if header.pn != HANDSHAKE_PN[ftype]:
            raise FrameError("pn", "handshake frame with a wrong pn")
        hs = self._hs if self._hs is not None else self._new_handshake()
        try:
            step = hs.receive(ftype, payload)
        except CryptoError as e:
            self._reject(e.reason, "crypto", path_id)
            if hs.failed:
                self._closed(1, f"handshake refused: {e.reason}")
            return
        self._hs_seen[ftype] = data
        if step is not None:
            self._set_hs_out(step[0], step[1], now)
        if hs.complete:
            self._established(hs, now)

    def _established(self, hs: Handshake, now: float) -> None:
        r = hs.result
        assert r is not None
        self._send = SendKeys(r.send_chain, now=now)
        self._recv = RecvKeys(r.recv_chain)
        self._recv_epoch_saved = self._recv.epoch
        self.state = SessionState.ESTABLISHED
        self.sas, self.peer_fingerprint, self.peer_public = r.sas, r.peer_fingerprint, r.peer_public
        self._events.append(HandshakeCompleted(r.sas, r.peer_fingerprint))
        if self._persist:
            ch = self._changes
            ch.append(
                Established(
                    self.config.session_id,
                    self.config.initiator,
                    r.sas,
                    r.peer_fingerprint,
                    r.peer_public,
                )
            )
            ch.append(KeysChanged(self._send.export_state(), self._recv.export_state()))
            for q in self._sched.queues:
                ch.extend(MessageQueued(m.msg_id, m.cls, m.data, m.ts_us) for m in q)
        if self._bind_after_handshake:
            self._queue_bind()
        if self.config.initiator:
            self._confirm(now)  # pings go out at once and confirm the keys to the responder

    # -- restart -------------------------------------------------------------------------

    def _restore(self, snap: SessionSnapshot, now: float) -> None:
        if not snap.established:
            raise ValueError("snapshot of a session that never got established")
        if snap.session_id != self.config.session_id or snap.initiator != self.config.initiator:
            raise ValueError("snapshot belongs to another session or role")
        self._send = SendKeys.from_state(snap.send_keys)
        self._recv = RecvKeys.from_state(snap.recv_keys)
        self._recv_epoch_saved = self._recv.epoch
        self._next_pn = self._pn_ceiling = max(snap.pn_ceiling, FIRST_PN)
        if snap.replay_high >= 0:
            # everything at or below the saved high counts as seen: the peer resends
            # anything we lost with a fresh pn anyway
            self._replay = ReplayWindow.from_state(
                {"highest": snap.replay_high, "bits": "f" * 1024}
            )
            self._replay_saved = snap.replay_high
        self.sas, self.peer_fingerprint, self.peer_public = (
            snap.sas,
            snap.peer_fingerprint,
            snap.peer_public,
        )
        for c in range(NUM_CLASSES):
            self._tx[c].next_seq = snap.send_next_seq[c]
            self._next_index[c] = snap.send_next_index[c]
            self._rx[c].next_seq = snap.recv_next_seq[c]
            self._rx[c].delivered = snap.recv_delivered[c]
        for key in sorted(snap.frames):
            sf = snap.frames[key]
            f = SentFrame(sf.cls, sf.seq, sf.flags, sf.payload, sf.ts_us, sf.msg_ids)
            f.sends = 1
            f.queued = True
            self._tx[sf.cls].unacked[sf.seq] = f
            self._retx[sf.cls].append(f)
        for mid in sorted(snap.messages):
            m = snap.messages[mid]
            self._sched.push(OutMessage(m.msg_id, m.cls, m.data, m.ts_us, m.offset))
        self._confirmed = True
        self._next_heartbeat = now
        if snap.closed is not None:
            self.state = SessionState.CLOSED
            self._close_info = snap.closed
        else:
            self.state = SessionState.ESTABLISHED


def _close_payload(code: int, reason: str) -> bytes:
    return _CLOSE.pack(code) + reason.encode("utf-8")[:1024]
