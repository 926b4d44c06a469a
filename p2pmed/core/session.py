"""The p2pmed session: handshake, keys, priorities, reliability and paths in one sans-IO object.

Shape (as aioquic): `receive(data, path_id, now)`, `datagrams_to_send(now)`,
`get_timer()`, `handle_timer(now)`, `next_event()`. No sockets, no clock.

Each part owns its state and is given what it needs per call; none knows the Session:
HandshakeDriver (handshake_driver.py), FrameProtection (protection.py: keys, pns, replay
window), Streams (streams.py: message queue, unacked frames, resends, reassembly), Sender
(sender.py: the flight window), Receiver (receiver.py: in-order delivery, the ACK owed),
Recovery (recovery.py: ACKs, RTO, failover), Heartbeat (heartbeat.py: paths, PING/PONG) and
DirectBinding (binding.py: PATH_BIND). The Session alone changes `state`, queues events and
records changes, from what the parts return. Bad input never raises; it is counted in
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

import logging
import struct
from collections import deque
from collections.abc import Mapping

from p2pmed.core import frame as _frame
from p2pmed.core.binding import DirectBinding, Verdict
from p2pmed.core.config import NUM_CLASSES, OPEN_STATES, SessionConfig, SessionState
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.errors import FrameError, LocalStateError, RemoteProtocolError, StateError
from p2pmed.core.events import (
    Event,
    FrameRejected,
    HandshakeCompleted,
    MessageAcked,
    PathBound,
    PathDown,
    PathQuality,
    PathUp,
    SessionClosed,
)
from p2pmed.core.frame import HANDSHAKE_TYPES, Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import HandshakeResult
from p2pmed.core.handshake_driver import HandshakeDriver
from p2pmed.core.heartbeat import Heartbeat
from p2pmed.core.paths import PathStatus
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
)
from p2pmed.core.protection import FIRST_PN, FrameProtection
from p2pmed.core.receiver import Receiver
from p2pmed.core.recovery import Acked, Recovery
from p2pmed.core.reliability import SentFrame, decode_ack
from p2pmed.core.sender import Sender
from p2pmed.core.stats import SessionStats, StatsView
from p2pmed.core.streams import Streams

__all__ = ["FIRST_PN", "NUM_CLASSES", "Session", "SessionConfig", "SessionState"]

log = logging.getLogger("p2pmed.core")

_CLOSE = struct.Struct(">H")
_FLAGS = [Flags(i) for i in range(8)]
_CLASSES = list(MessageClass)
_DATA = FrameType.DATA
CLOSE_REFUSED = 1  # CLOSE code: handshake or path binding refused
CLOSE_PROTOCOL_VIOLATION = 2


class Session:
    def __init__(
        self, config: SessionConfig, *, now: float, restored: SessionSnapshot | None = None
    ) -> None:
        self.config = config
        self.state = SessionState.HANDSHAKING
        self._stats = SessionStats()
        self._stats_view = StatsView(self._stats)
        self.sas = ""
        self.peer_fingerprint = ""
        self.peer_public = b""
        self._events: deque[Event] = deque()
        self._changes: list[Change] = []
        self._persist = config.persist
        self._ts_offset = config.timestamp_offset
        self._ctrl: list[tuple[str | None, FrameType, bytes]] = []  # (path or all, type, payload)
        self._confirmed = False  # the peer proved it holds the keys
        self._close_deadline: float | None = None
        self._close_info = (0, "")
        self._rekey_ping = 0  # a PONG to a PING with this id or later ends REKEYING
        # the parts
        self._binding = DirectBinding()
        self._prot = FrameProtection(config.pn_block)
        self._streams = Streams(config.max_message)
        self._handshake = HandshakeDriver(config)
        self._heartbeat = Heartbeat(
            interval=config.heartbeat_interval, dead_after=config.path_dead_after
        )
        self._recovery = Recovery(
            initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self._sender = Sender(config)
        self._receiver = Receiver(ack_every=config.ack_every, ack_delay=config.ack_delay)
        if restored is not None:
            self._restore(restored, now)

    # -- public API ----------------------------------------------------------------------

    @property
    def counters(self) -> SessionStats:
        """The typed counters (read them; the session alone counts)."""
        return self._stats

    @property
    def stats(self) -> Mapping[str, int]:
        """The counters as a read-only mapping by name, plus "rejected_<kind>_<reason>"."""
        return self._stats_view

    def expect_direct(self, local: bytes) -> None:
        """A direct path is being negotiated with our DTLS certificate `local` (SHA-256 of its
        DER): a peer's PATH_BIND naming it is held until that DTLS connects."""
        self._binding.expect(local)

    def set_fingerprints(self, local: bytes, remote: bytes) -> None:
        """Our DTLS transport connected: `local` is the SHA-256 of our certificate's DER,
        `remote` that of the certificate the peer presented in the completed DTLS handshake
        (never a value parsed from SDP). Sends a PATH_BIND once the session is open, and
        checks a held peer PATH_BIND for this connection (PathBound event, or a close as
        crypto/fingerprint)."""
        held = self._binding.connected(local, remote)
        if self.state in OPEN_STATES:
            self._queue_bind()
        if held is not None:
            self._on_verdict(self._binding.check(*held), "direct")

    def remember_fingerprints(self, local: bytes, remote: bytes) -> None:
        """Record a negotiation's fingerprints without binding them (e.g. an abandoned offer)."""
        self._binding.remember(local, remote)

    @property
    def bound(self) -> tuple[bytes, bytes] | None:
        """(local, remote) of the direct path whose peer PATH_BIND was verified, if any."""
        return self._binding.bound

    def commit_frame(self) -> bytes | None:
        """The HS_COMMIT frame this session accepted, if any (a responder's candidate check)."""
        return self._handshake.seen.get(FrameType.HS_COMMIT)

    def add_path(self, path_id: str, now: float, *, preferred: bool = False) -> None:
        hb = self._heartbeat
        if hb.add(path_id, now, preferred):
            self._events.append(PathUp(path_id))
        if hb.direct_again(path_id) and self.state in OPEN_STATES:
            self._ratchet(now)
        self._handshake.path_added()
        if self._confirmed and self.state in OPEN_STATES:
            hb.queue_ping(path_id, now)
            self._take_pings()

    def remove_path(self, path_id: str, now: float) -> None:
        if path_id not in self._heartbeat.paths:
            return
        if self._heartbeat.remove(path_id):
            self._events.append(PathDown(path_id))
        self._reroute()

    def path_status(self, path_id: str) -> PathStatus:
        return self._heartbeat.status(path_id)

    @property
    def paths(self) -> list[str]:
        return list(self._heartbeat.paths)

    def connect(self, now: float) -> None:
        """Initiator: start the handshake (frames go out on every path)."""
        if not self.config.initiator:
            raise LocalStateError("role", "only the initiator connects")
        if self._handshake.started or self.state is not SessionState.HANDSHAKING:
            raise LocalStateError("handshaking", "handshake already started")
        self._handshake.start(now)

    def send(self, cls: MessageClass, data: bytes, now: float) -> int:
        """Queue one application message of any size; returns its message id.

        The id is `(n << 3) | cls` where n counts this class's messages from 1; the
        receiving side reports the same id in MessageReceived.
        """
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            raise LocalStateError("closed", "session is closing")
        c = int(cls)
        if not 0 <= c < NUM_CLASSES:
            raise ValueError("unknown message class")
        if type(data) is not bytes:
            data = bytes(data)
        ts = int((now + self._ts_offset) * 1e6)
        msg_id = self._streams.queue(c, data, ts)
        self._stats.messages_sent += 1
        if self._persist and self._prot.ready:
            self._changes.append(MessageQueued(msg_id, c, data, ts))
        return msg_id

    def close(self, now: float, code: int = 0, reason: str = "") -> None:
        if self.state is SessionState.CLOSED or self.state is SessionState.CLOSING:
            return
        code &= 0xFFFF
        if not self._prot.ready or not self._confirmed:
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
        if self._persist:
            high = self._prot.take_replay_high()
            if high is not None:
                self._changes.append(ReplayHigh(high))
        changes, self._changes = self._changes, []
        return changes

    def snapshot(self) -> SessionSnapshot:
        """The full durable state right now (a store's starting point)."""
        snap = SessionSnapshot()
        if not self._prot.ready:
            return snap
        snap.established = True
        snap.session_id = self.config.session_id
        snap.initiator = self.config.initiator
        snap.sas, snap.peer_fingerprint, snap.peer_public = (
            self.sas,
            self.peer_fingerprint,
            self.peer_public,
        )
        snap.send_keys, snap.recv_keys, snap.pn_ceiling, snap.replay_high = self._prot.export()
        self._streams.export(snap)
        if self.state is SessionState.CLOSED:
            snap.closed = self._close_info
        return snap

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing unacked."""
        return self._streams.idle

    @property
    def inflight(self) -> tuple[int, int]:
        """(frames, plaintext bytes) sent and neither acked nor sacked."""
        return self._streams.inflight_frames(), self._streams.inflight_bytes()

    @property
    def queued_bytes(self) -> int:
        return self._streams.queued_bytes

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
        if self._prot.ready and self._confirmed:
            ack_deadline = self._receiver.deadline
            if ack_deadline is not None:
                times.append(ack_deadline)
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
        if self._handshake.on_timer(now):
            self._stats.handshake_retransmits += 1
        if not self._prot.ready or not self._confirmed:
            return
        self._receiver.on_timer(now)
        if self._recovery.on_timer(self._streams, now):
            self._stats.rto_timeouts += 1
        hb = self._heartbeat
        if hb.credit_stall(now):
            self._stats.stalls += 1
        if hb.beat_due(now):
            self._beat(now)
        for path_id in hb.expire(now):
            self._events.append(PathDown(path_id))
            self._reroute()
        self._prot.expire(now)

    # -- frames out ----------------------------------------------------------------------

    def datagrams_to_send(
        self, now: float, max_datagrams: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Frames to hand to the transports now, as (path_id, frame bytes).

        `max_datagrams` caps the DATA frames produced (what the transport can take);
        the rest waits, in priority order, for the next call.
        """
        out: list[tuple[str, bytes]] = []
        hb = self._heartbeat
        live = hb.live()
        if self._handshake.send_now:
            targets = live or list(hb.paths)
            hs_frame = self._handshake.emit(now, targets)
            if hs_frame is not None:
                out.extend((pid, hs_frame) for pid in targets)
        if not self._prot.ready or not self._confirmed:
            return self._count(out)
        if hb.outgoing:
            self._take_pings()
        if self._ctrl:
            self._send_ctrl(now, live, out)
        if self.state is SessionState.CLOSED:
            return self._count(out)
        if self._receiver.ack_due and live:
            self._send_ack(now, live, out)
        if self.state is SessionState.CLOSING or not live:
            return self._count(out)
        self._send_data(now, live, max_datagrams, out)
        return self._count(out)

    def _send_data(
        self, now: float, live: list[str], max_datagrams: int | None, out: list[tuple[str, bytes]]
    ) -> None:
        preferred = [live[0]]
        budget = -1 if max_datagrams is None else max_datagrams
        streams, sender = self._streams, self._sender
        st = self._stats
        persist = self._persist
        for c in range(NUM_CLASSES):
            targets = live if c == 0 else preferred
            while budget != 0:
                item = sender.next_frame(streams, c)
                if item is None:
                    break
                f, plan = item
                if plan is None:
                    st.retransmits += 1
                elif persist:
                    self._changes.append(
                        FrameAdded(
                            c, f.seq, plan.flags, plan.payload, plan.ts_us, plan.done, plan.progress
                        )
                    )
                self._transmit(f, now, targets, out)
                budget -= 1
            if budget == 0:
                break

    def _count(self, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if out:
            st = self._stats
            st.frames_sent += len(out)
            st.bytes_sent += sum(len(b) for _, b in out)
        return out

    def _take_pn(self) -> int:
        prot = self._prot
        pn = prot.take_pn()
        if self._persist:
            ceiling = prot.take_reserved()
            if ceiling is not None:
                self._changes.append(PnReserved(ceiling))
                self._changes.append(KeysChanged(prot.send_state(), None))
        return pn

    def _transmit(
        self, f: SentFrame, now: float, targets: list[str], out: list[tuple[str, bytes]]
    ) -> None:
        c = f.cls
        pn = self._take_pn()
        header = Header(
            _DATA,
            _FLAGS[f.flags],
            _CLASSES[c],
            0,
            pn,
            f.seq,
            self._streams.rx[c].ack_point,
            f.ts_us,
            0,
        )
        wire = self._prot.seal(header, f.payload)
        f.pn = pn
        f.sent_at = now
        f.sends += 1
        f.paths = tuple(targets)
        self._streams.tx[c].mark_sent(f)
        self._recovery.on_sent(pn, now)
        for pid in targets:
            out.append((pid, wire))
        st = self._stats
        st.data_frames_sent += 1
        if len(targets) > 1:
            st.critical_copies += len(targets) - 1

    def _seal_ctrl(self, ftype: FrameType, payload: bytes, now: float) -> bytes:
        pn = self._take_pn()
        ts = int((now + self._ts_offset) * 1e6)
        return self._prot.seal(
            Header(ftype, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, ts, 0), payload
        )

    def _send_ctrl(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        paths = self._heartbeat.paths
        ctrl, self._ctrl = self._ctrl, []
        for path_id, ftype, payload in ctrl:
            if path_id is None:
                targets = live or list(paths)
            elif path_id in paths:
                targets = [path_id]
            else:
                continue
            if not targets:
                continue
            wire = self._seal_ctrl(ftype, payload, now)
            for pid in targets:
                out.append((pid, wire))
            if ftype is FrameType.PING:
                self._stats.pings_sent += 1

    def _send_ack(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        rcv = self._receiver
        payload = rcv.build_ack(self._streams.ack_entries(), now)
        wire = self._seal_ctrl(FrameType.ACK, payload, now)
        for pid in rcv.ack_targets(live, self._heartbeat.is_alive(rcv.ack.path)):
            out.append((pid, wire))
        rcv.ack_sent()
        self._stats.acks_sent += 1

    # -- frames in -----------------------------------------------------------------------

    def receive(self, data: bytes, path_id: str, now: float) -> None:
        """Process one frame from a transport. Never raises on bad input."""
        st = self._stats
        st.frames_received += 1
        st.bytes_received += len(data)
        if type(data) is not bytes:
            data = bytes(data)
        try:
            self._process(data, path_id, now)
        except RemoteProtocolError as e:
            self._reject(e.reason, e.kind, path_id)
        except Exception:  # a bug, not bad input: count it loudly, never crash the node
            log.exception(
                "session %s: internal error on a frame from %s", self.config.session_id, path_id
            )
            self._reject("internal", "frame", path_id)

    def _process(self, data: bytes, path_id: str, now: float) -> None:
        """frame.decode (CRC first) -> state check -> replay check -> AEAD open -> replay
        accept -> dispatch by frame type. Errors propagate as ProtocolErrors."""
        header, payload = _frame.decode(data)
        ftype = header.type
        if ftype in HANDSHAKE_TYPES:
            self._on_handshake(header, payload, data, path_id, now)
            return
        state = self.state
        if (
            not self._prot.ready
            or state is SessionState.HANDSHAKING
            or state is SessionState.CLOSED
        ):
            raise StateError("state", f"{ftype.name} in state {state.value}")
        if state is SessionState.CLOSING and ftype is FrameType.PATH_BIND:
            raise StateError("state", "PATH_BIND while closing")
        plaintext = self._prot.open(header, data, path_id, now)
        if plaintext is None:
            self._stats.duplicate_frames += 1  # the copy sent on another path
            return
        if self._persist:
            recv_state = self._prot.take_recv_epoch()
            if recv_state is not None:
                self._changes.append(KeysChanged(None, recv_state))
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
            self._on_verdict(self._binding.on_bind(plaintext), path_id)

    def _on_handshake(
        self, header: Header, payload: bytes, data: bytes, path_id: str, now: float
    ) -> None:
        step = self._handshake.on_frame(header, payload, data, path_id, now, self.state)
        if step.duplicate:
            self._stats.duplicate_handshake += 1
        if step.error is not None:
            self._reject(step.error.reason, step.error.kind, path_id)
            if step.refused:
                self._closed(CLOSE_REFUSED, f"handshake refused: {step.error.reason}")
            return
        if step.result is not None:
            self._established(step.result, now)

    def _established(self, r: HandshakeResult, now: float) -> None:
        send, recv = SendKeys(r.send_chain, now=now), RecvKeys(r.recv_chain)
        self._prot.install(send, recv)
        self.state = SessionState.ESTABLISHED
        self.sas, self.peer_fingerprint, self.peer_public = r.sas, r.peer_fingerprint, r.peer_public
        self._events.append(HandshakeCompleted(r.sas, r.peer_fingerprint))
        if self._persist:
            cfg = self.config
            ch = self._changes
            ch.append(
                Established(cfg.session_id, cfg.initiator, r.sas, r.peer_fingerprint, r.peer_public)
            )
            ch.append(KeysChanged(send.export_state(), recv.export_state()))
            ch.extend(
                MessageQueued(m.msg_id, m.cls, m.data, m.ts_us) for m in self._streams.queued()
            )
        self._queue_bind()  # a direct path connected before the handshake completed
        if self.config.initiator:
            self._confirm(now)  # pings go out at once and confirm the keys to the responder

    def _on_data(self, header: Header, payload: bytes, path_id: str, now: float) -> None:
        c = int(header.cls)
        streams = self._streams
        tx = streams.tx[c]
        if tx.unacked and header.ack > next(iter(tx.unacked)):
            done = self._recovery.on_cumulative(streams, c, header.ack)
            if done:
                self._acked([(c, done)])
        rx = streams.rx[c]
        ready = self._receiver.on_data(rx, header, payload, path_id, now)
        if ready is None:
            self._stats.duplicates += 1
            return
        if not ready:
            return
        delivery = self._receiver.deliver(rx, ready, path_id)
        events = delivery.events
        self._events.extend(events)
        self._stats.messages_received += len(events)
        if self._persist:
            stored = tuple((e.message_id, e.seq, e.sent_timestamp_us, e.data) for e in events)
            self._changes.append(Delivered(c, rx.ack_point, rx.delivered, stored))
        if delivery.malformed:
            # The frame passed the AEAD, so the peer itself built it wrong. How many messages
            # it held is unknown: counting on would shift every later message id, skipping
            # would lose messages silently. So close at once: no ACK leaves after this, and
            # the sender never sees this frame's messages as acked.
            self._reject("payload", "frame", path_id)
            self._abort(CLOSE_PROTOCOL_VIOLATION, "protocol violation: malformed DATA payload")

    def _on_ack(self, payload: bytes, now: float) -> None:
        largest_pn, delay_us, entries = decode_ack(payload)
        self._stats.acks_received += 1
        acked, lost = self._recovery.on_ack(self._streams, largest_pn, delay_us, entries, now)
        self._stats.fast_retransmits += lost
        if acked:
            self._acked(acked)

    def _acked(self, acked: Acked) -> None:
        events = self._events
        n = 0
        for c, done in acked:
            cls = _CLASSES[c]
            for f in done:
                for mid in f.msg_ids:
                    events.append(MessageAcked(mid, cls))
                    n += 1
            if self._persist:
                self._changes.append(FramesAcked(c, done[-1].seq + 1))
        self._stats.messages_acked += n

    def _on_pong(self, payload: bytes, path_id: str, now: float) -> None:
        pong = self._heartbeat.on_pong(payload, path_id, now)
        if pong is None:
            return
        self._stats.pongs_received += 1
        if pong.rtt is not None:
            if pong.came_alive:
                self._events.append(PathUp(path_id))
            self._events.append(PathQuality(path_id, pong.rtt, pong.loss))
        if self.state is SessionState.REKEYING and pong.ping_id >= self._rekey_ping:
            self.state = SessionState.ESTABLISHED

    def _on_verdict(self, verdict: Verdict, path_id: str) -> None:
        st = self._stats
        if verdict is Verdict.BOUND:
            st.path_binds += 1
            bound = self._binding.bound
            assert bound is not None
            self._events.append(PathBound(*bound))
        elif verdict is Verdict.HELD:
            st.held_binds += 1
        elif verdict is Verdict.STALE:
            st.stale_binds += 1
        else:
            self._reject("fingerprint", "crypto", path_id)
            self._abort(
                CLOSE_REFUSED,
                "crypto/fingerprint: the peer's DTLS saw other certificates than ours "
                "(a man in the middle on the direct path?)",
            )

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

    # -- the session's own steps ---------------------------------------------------------

    def _reject(self, reason: str, kind: str, path_id: str) -> None:
        self._stats.reject(reason, kind)
        self._events.append(FrameRejected(reason, kind, path_id))

    def _queue_bind(self) -> None:
        bind = self._binding.payload()
        if bind is not None:
            self._ctrl.append((None, FrameType.PATH_BIND, bind))

    def _take_pings(self) -> None:
        """The PINGs the heartbeat queued join the control frames, in the order queued."""
        self._ctrl.extend((pid, FrameType.PING, p) for pid, p in self._heartbeat.take_outgoing())

    def _queue_close(self, code: int, reason: str) -> None:
        payload = _CLOSE.pack(code) + reason.encode("utf-8")[:1024]
        self._ctrl.append((None, FrameType.CLOSE, payload))

    def _confirm(self, now: float) -> None:
        self._confirmed = True
        self._handshake.stop()
        self._heartbeat.revive_all(now)
        self._beat(now)

    def _beat(self, now: float) -> None:
        cfg = self.config
        self._heartbeat.beat(now)
        if self.state in OPEN_STATES and self._prot.needs_ratchet(
            now, max_frames=cfg.rekey_frames, max_age=cfg.rekey_interval
        ):
            self._ratchet(now)
        if self.state in OPEN_STATES:
            self._heartbeat.ping_all(now)
            self._take_pings()
        elif self.state is SessionState.CLOSING:  # CLOSE is unreliable: repeat until answered
            self._queue_close(*self._close_info)

    def _ratchet(self, now: float) -> None:
        prot = self._prot
        prot.ratchet(now)
        self._stats.ratchets += 1
        self._rekey_ping = self._heartbeat.next_ping_id
        self.state = SessionState.REKEYING
        if self._persist:
            self._changes.append(KeysChanged(prot.send_state(), None))
        self._heartbeat.ping_all(now)
        self._take_pings()

    def _reroute(self) -> None:
        """Resend at once every unacked frame that was only on paths now dead or gone."""
        n = self._recovery.reroute(self._streams, self._heartbeat.live_set())
        self._stats.failover_resends += n
        self._receiver.want_ack()

    def _abort(self, code: int, reason: str) -> None:
        """Close at once on a peer's protocol violation: one CLOSE out, nothing else."""
        if self.state is SessionState.CLOSED:
            return
        self._queue_close(code, reason)
        self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> None:
        self.state = SessionState.CLOSED
        self._close_deadline = None
        self._handshake.stop()
        self._close_info = (code, reason)
        self._events.append(SessionClosed(code, reason))
        if self._persist and self._prot.ready:
            self._changes.append(Closed(code, reason))

    def _restore(self, snap: SessionSnapshot, now: float) -> None:
        if not snap.established:
            raise ValueError("snapshot of a session that never got established")
        if snap.session_id != self.config.session_id or snap.initiator != self.config.initiator:
            raise ValueError("snapshot belongs to another session or role")
        self._prot.restore(snap.send_keys, snap.recv_keys, snap.pn_ceiling, snap.replay_high)
        self.sas, self.peer_fingerprint, self.peer_public = (
            snap.sas,
            snap.peer_fingerprint,
            snap.peer_public,
        )
        self._streams.restore(snap)
        self._confirmed = True
        self._heartbeat.next_due = now
        if snap.closed is not None:
            self.state = SessionState.CLOSED
            self._close_info = snap.closed
        else:
            self.state = SessionState.ESTABLISHED
