"""The p2pmed session: handshake, keys, priorities, reliability and paths in one sans-IO object.

Shape (as aioquic): `receive(data, path_id, now)`, `datagrams_to_send(now)`,
`get_timer()`, `handle_timer(now)`, `next_event()`. No sockets, no clock.

One object in four files, to keep each small: this one (the public API and the timers),
session_base.py (the Session's state, its parts and its own steps), session_in.py (frames
in) and session_out.py (frames out). Only this module's `Session` is used from outside.

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

from collections.abc import Mapping

from p2pmed.core.config import NUM_CLASSES, OPEN_STATES, SessionConfig, SessionState
from p2pmed.core.errors import LocalStateError
from p2pmed.core.events import Event, PathDown, PathUp
from p2pmed.core.frame import FrameType, MessageClass
from p2pmed.core.paths import PathStatus
from p2pmed.core.persist import Change, MessageQueued, ReplayHigh, SessionSnapshot
from p2pmed.core.protection import FIRST_PN
from p2pmed.core.session_base import CLOSE_PROTOCOL_VIOLATION, CLOSE_REFUSED
from p2pmed.core.session_in import SessionIn
from p2pmed.core.session_out import SessionOut
from p2pmed.core.stats import SessionStats

__all__ = [
    "CLOSE_PROTOCOL_VIOLATION",
    "CLOSE_REFUSED",
    "FIRST_PN",
    "NUM_CLASSES",
    "Session",
    "SessionConfig",
    "SessionState",
]


class Session(SessionIn, SessionOut):
    """One end of a p2pmed session (see the module docstring)."""

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
