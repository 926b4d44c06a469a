"""A Session's durable state: the full snapshot of it, and a Session rebuilt from one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pmed.core.config import FIRST_PN, NUM_CLASSES, SessionState
from p2pmed.core.crypto import RecvKeys, ReplayWindow, SendKeys
from p2pmed.core.persist import SessionSnapshot, StoredFrame, StoredMessage
from p2pmed.core.reliability import SentFrame
from p2pmed.core.scheduler import OutMessage

if TYPE_CHECKING:
    from p2pmed.core.session import Session


def snapshot(s: Session) -> SessionSnapshot:
    snap = SessionSnapshot()
    if s._send is None or s._recv is None:
        return snap
    snap.established = True
    snap.session_id = s.config.session_id
    snap.initiator = s.config.initiator
    snap.sas, snap.peer_fingerprint, snap.peer_public = s.sas, s.peer_fingerprint, s.peer_public
    snap.send_keys = s._send.export_state()
    snap.recv_keys = s._recv.export_state()
    snap.pn_ceiling = s._sender.pn_ceiling
    snap.replay_high = s._receiver.replay.highest
    for c in range(NUM_CLASSES):
        tx, rx = s._tx[c], s._rx[c]
        snap.send_next_seq[c] = tx.next_seq
        snap.send_next_index[c] = s._next_index[c]
        snap.recv_next_seq[c] = rx.ack_point
        snap.recv_delivered[c] = rx.delivered
        for f in tx.unacked.values():
            snap.frames[(c, f.seq)] = StoredFrame(c, f.seq, f.flags, f.payload, f.ts_us, f.msg_ids)
        for m in s._sched.queues[c]:
            snap.messages[m.msg_id] = StoredMessage(m.msg_id, c, m.data, m.ts_us, m.offset)
    if s.state is SessionState.CLOSED:
        snap.closed = s._close_info
    return snap


def restore(s: Session, snap: SessionSnapshot, now: float) -> None:
    if not snap.established:
        raise ValueError("snapshot of a session that never got established")
    if snap.session_id != s.config.session_id or snap.initiator != s.config.initiator:
        raise ValueError("snapshot belongs to another session or role")
    s._send = SendKeys.from_state(snap.send_keys)
    s._recv = RecvKeys.from_state(snap.recv_keys)
    receiver, sender = s._receiver, s._sender
    receiver.recv_epoch_saved = s._recv.epoch
    sender.next_pn = sender.pn_ceiling = max(snap.pn_ceiling, FIRST_PN)
    if snap.replay_high >= 0:
        # everything at or below the saved high counts as seen: the peer resends
        # anything we lost with a fresh pn anyway
        receiver.replay = ReplayWindow.from_state({"highest": snap.replay_high, "bits": "f" * 1024})
        receiver.replay_saved = snap.replay_high
    s.sas, s.peer_fingerprint, s.peer_public = snap.sas, snap.peer_fingerprint, snap.peer_public
    for c in range(NUM_CLASSES):
        s._tx[c].next_seq = snap.send_next_seq[c]
        s._next_index[c] = snap.send_next_index[c]
        s._rx[c].next_seq = snap.recv_next_seq[c]
        s._rx[c].delivered = snap.recv_delivered[c]
    for key in sorted(snap.frames):
        sf = snap.frames[key]
        f = SentFrame(sf.cls, sf.seq, sf.flags, sf.payload, sf.ts_us, sf.msg_ids)
        f.sends = 1
        f.queued = True
        s._tx[sf.cls].unacked[sf.seq] = f
        s._retx[sf.cls].append(f)
    for mid in sorted(snap.messages):
        m = snap.messages[mid]
        s._sched.push(OutMessage(m.msg_id, m.cls, m.data, m.ts_us, m.offset))
    s._confirmed = True
    s._heartbeat.next_due = now
    if snap.closed is not None:
        s.state = SessionState.CLOSED
        s._close_info = snap.closed
    else:
        s.state = SessionState.ESTABLISHED
