"""Frames in: a Session's receive(): decode, state check, replay window and AEAD open, then
the frame by type (handshake, DATA, ACK, PING/PONG, CLOSE, PATH_BIND). Bad input never
raises: it is counted and reported as FrameRejected."""

from __future__ import annotations

from p2pmed.core import frame as _frame
from p2pmed.core.binding import Verdict
from p2pmed.core.config import SessionState
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.errors import FrameError, RemoteProtocolError, StateError
from p2pmed.core.events import HandshakeCompleted, MessageAcked, PathBound, PathQuality, PathUp
from p2pmed.core.frame import HANDSHAKE_TYPES, FrameType, Header
from p2pmed.core.handshake import HandshakeResult
from p2pmed.core.persist import Delivered, Established, FramesAcked, KeysChanged, MessageQueued
from p2pmed.core.recovery import Acked
from p2pmed.core.reliability import decode_ack
from p2pmed.core.session_base import (
    CLASSES,
    CLOSE_CODE,
    CLOSE_PROTOCOL_VIOLATION,
    CLOSE_REFUSED,
    SessionBase,
    log,
)

_DATA = FrameType.DATA


class SessionIn(SessionBase):
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
            cls = CLASSES[c]
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
        (code,) = CLOSE_CODE.unpack_from(payload)
        reason = payload[2:].decode("utf-8", "replace")
        if self.state is SessionState.CLOSING:
            self._closed(*self._close_info)
            return
        self._queue_close(code, "")
        self._closed(code, reason)
