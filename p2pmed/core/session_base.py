"""The Session's state and its own steps (session.py has the public API, session_in.py and
session_out.py the frames in and out; together they are one object, split only to keep the
files small). The parts (handshake driver, protection, streams, sender, receiver, recovery,
heartbeat, binding) are created here and own their state; only these Session methods change
`state`, queue events and record changes."""

from __future__ import annotations

import logging
import struct
from collections import deque

from p2pmed.core.binding import DirectBinding
from p2pmed.core.config import OPEN_STATES, SessionConfig, SessionState
from p2pmed.core.events import Event, FrameRejected, SessionClosed
from p2pmed.core.frame import FrameType, MessageClass
from p2pmed.core.handshake_driver import HandshakeDriver
from p2pmed.core.heartbeat import Heartbeat
from p2pmed.core.persist import Change, Closed, KeysChanged, SessionSnapshot
from p2pmed.core.protection import FrameProtection
from p2pmed.core.receiver import Receiver
from p2pmed.core.recovery import Recovery
from p2pmed.core.sender import Sender
from p2pmed.core.stats import SessionStats, StatsView
from p2pmed.core.streams import Streams

log = logging.getLogger("p2pmed.core")

CLOSE_CODE = struct.Struct(">H")  # a CLOSE payload starts with its code
CLASSES = list(MessageClass)  # by number: MessageClass(c) without the enum call
CLOSE_REFUSED = 1  # CLOSE code: handshake or path binding refused
CLOSE_PROTOCOL_VIOLATION = 2


class SessionBase:
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
        payload = CLOSE_CODE.pack(code) + reason.encode("utf-8")[:1024]
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
