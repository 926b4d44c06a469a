"""Receive pipeline of a Session.

frame.decode (CRC first) -> state check -> replay check -> AEAD open -> replay
accept -> dispatch by frame type. Errors propagate as typed exceptions; the
Session counts them and turns them into FrameRejected events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pmed.core import frame as _frame
from p2pmed.core.config import SessionState
from p2pmed.core.crypto import ReplayWindow
from p2pmed.core.errors import CryptoError, FrameError, StateError
from p2pmed.core.events import MessageReceived, PathBound
from p2pmed.core.frame import HANDSHAKE_TYPES, FrameType, Header, MessageClass
from p2pmed.core.persist import Delivered, KeysChanged
from p2pmed.core.reliability import RecvStream

if TYPE_CHECKING:
    from p2pmed.core.session import Session

_CLASSES = list(MessageClass)
_DATA = FrameType.DATA
# (pn, crc, paths it came in on) of recently accepted frames, to tell copies from replays: a
# sender sends a given frame at most once per path (CRITICAL DATA, ACKs and control frames go
# out on several paths), so the same bytes again on a path that delivered them are a replay.
RECENT = 1024
# ...or ACK once this many DATA bytes came in (two 16 KiB chunks), so that during a bulk
# transfer the sender's window keeps moving instead of waiting for ack_every frames.
ACK_BYTES = 32 * 1024
CLOSE_REFUSED = 1  # CLOSE code: handshake or path binding refused
CLOSE_PROTOCOL_VIOLATION = 2


class Receiver:
    __slots__ = (
        "_s",
        "ack",
        "ack_delay",
        "ack_every",
        "events",
        "recent",
        "recv_epoch_saved",
        "replay",
        "replay_saved",
        "rx",
        "stats",
        "tx",
    )

    def __init__(self, session: Session) -> None:
        cfg = session.config
        self._s = session
        self.rx = session._rx
        self.tx = session._tx
        self.ack = session._ack
        self.events = session._events
        self.stats = session.stats
        self.ack_every = cfg.ack_every
        self.ack_delay = cfg.ack_delay
        self.replay = ReplayWindow()
        self.replay_saved = -1
        self.recv_epoch_saved = 0
        self.recent: list[tuple[int, bytes, tuple[str, ...]] | None] = [None] * RECENT

    def process(self, data: bytes, path_id: str, now: float) -> None:
        s = self._s
        header, payload = _frame.decode(data)
        ftype = header.type
        if ftype in HANDSHAKE_TYPES:
            s._handshake.on_frame(header, payload, data, path_id, now)
            return
        state = s.state
        recv = s._recv
        if recv is None or state is SessionState.HANDSHAKING or state is SessionState.CLOSED:
            raise StateError("state", f"{ftype.name} in state {state.value}")
        if state is SessionState.CLOSING and ftype is FrameType.PATH_BIND:
            raise StateError("state", "PATH_BIND while closing")
        pn = header.pn
        crc = data[-4:]
        try:
            self.replay.check(pn)
        except CryptoError:
            slot = pn & (RECENT - 1)
            seen = self.recent[slot]
            if seen is not None and seen[0] == pn and seen[1] == crc:
                if path_id in seen[2]:
                    raise CryptoError("replay", "a frame already received on this path") from None
                self.recent[slot] = (pn, crc, (*seen[2], path_id))
                self.stats["duplicate_frames"] += 1  # the copy sent on another path
                return
            raise
        plaintext = recv.open(header, data, now)
        self.replay.accept(pn)
        self.recent[pn & (RECENT - 1)] = (pn, crc, (path_id,))
        if s._persist and recv.epoch != self.recv_epoch_saved:
            self.recv_epoch_saved = recv.epoch
            s._changes.append(KeysChanged(None, recv.export_state()))
        if not s._confirmed:
            s._confirm(now)
        if ftype is _DATA:
            self._on_data(header, plaintext, path_id, now)
        elif ftype is FrameType.ACK:
            s._recovery.on_ack(plaintext, now)
        elif ftype is FrameType.PING:
            if len(plaintext) != 8:
                raise FrameError("payload", "PING payload is 8 bytes")
            s._ctrl.append((path_id, FrameType.PONG, plaintext))
        elif ftype is FrameType.PONG:
            s._heartbeat.on_pong(plaintext, path_id, now)
        elif ftype is FrameType.CLOSE:
            s._on_close(plaintext)
        elif ftype is FrameType.PATH_BIND:
            self._on_path_bind(plaintext, path_id)

    def _on_data(self, header: Header, payload: bytes, path_id: str, now: float) -> None:
        c = int(header.cls)
        tx = self.tx[c]
        if tx.unacked and header.ack > next(iter(tx.unacked)):
            rec = self._s._recovery
            rec.on_cumulative(c, header.ack)
            rec.arm_rto()
        rx = self.rx[c]
        ack = self.ack
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
        ack.unacked_bytes += len(payload)
        if c == 0:
            ack.immediate = True
            ack.critical = True
        elif ack.unacked_frames >= self.ack_every or ack.unacked_bytes >= ACK_BYTES:
            ack.immediate = True
        elif ack.deadline is None:
            ack.deadline = now + self.ack_delay

    def _deliver(
        self, c: int, rx: RecvStream, frames: list[tuple[int, int, bytes, int]], path_id: str
    ) -> None:
        cls = _CLASSES[c]
        events = self.events
        s = self._s
        persist = s._persist
        stored: list[tuple[int, int, int, bytes]] = []
        count = 0
        malformed = False
        for seq, flags, payload, ts in frames:
            msgs = rx.messages(seq, flags, payload)
            if msgs is None:
                malformed = True
                break
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
            s._changes.append(Delivered(c, rx.ack_point, rx.delivered, tuple(stored)))
        if malformed:
            # The frame passed the AEAD, so the peer itself built it wrong. How many messages
            # it held is unknown: counting on would shift every later message id, skipping
            # would lose messages silently. So close at once: no ACK leaves after this, and
            # the sender never sees this frame's messages as acked.
            s._reject("payload", "frame", path_id)
            s._abort(CLOSE_PROTOCOL_VIOLATION, "protocol violation: malformed DATA payload")

    def _on_path_bind(self, payload: bytes, path_id: str) -> None:
        s = self._s
        n = payload[0] if payload else 0
        if not payload or len(payload) != 1 + n + 64:
            raise FrameError("payload", "malformed PATH_BIND")
        peer_cert = payload[1 + n : 33 + n]  # the sender's own certificate
        my_cert = payload[33 + n :]  # the certificate the sender's DTLS saw from us
        if my_cert != s._local_fp:
            if my_cert in s._pending_local or (s._local_fp is None and s._pending_local):
                # our DTLS for that negotiation has not connected yet: check it when it does
                s._held_bind = (peer_cert, my_cert)
                self.stats["held_binds"] = self.stats.get("held_binds", 0) + 1
                return
            if s._local_fp is None:
                # no negotiation here at all: a bind sent before we restarted (relayed from
                # the server's queue); whatever it names, it binds nothing
                self.stats["stale_binds"] = self.stats.get("stale_binds", 0) + 1
                return
        self.check_bind(peer_cert, my_cert, path_id)

    def check_bind(self, peer_cert: bytes, my_cert: bytes, path_id: str) -> None:
        """A peer's PATH_BIND against what our DTLS verified: bound, stale, or an attack,
        which ends the session (crypto/fingerprint, CLOSE code 1)."""
        s = self._s
        if peer_cert == s._remote_fp and my_cert == s._local_fp:
            self.stats["path_binds"] = self.stats.get("path_binds", 0) + 1
            s._bound = (my_cert, peer_cert)
            self.events.append(PathBound(my_cert, peer_cert))
            return
        if (my_cert, peer_cert) in s._known_fps:
            self.stats["stale_binds"] = self.stats.get("stale_binds", 0) + 1
            return
        s._reject("fingerprint", "crypto", path_id)
        s._abort(
            CLOSE_REFUSED,
            "crypto/fingerprint: the peer's DTLS saw other certificates than ours "
            "(a man in the middle on the direct path?)",
        )
