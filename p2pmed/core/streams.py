"""The per-class streams of a session: message ids, the send queue (scheduler), frames sent
and not yet acked, the retransmit queues, and the receive side's reassembly state."""

from __future__ import annotations

from collections import deque

from p2pmed.core.frame import NUM_CLASSES
from p2pmed.core.persist import SessionSnapshot, StoredFrame, StoredMessage
from p2pmed.core.reliability import RecvStream, SendStream, SentFrame
from p2pmed.core.scheduler import FramePlan, OutMessage, Scheduler


class Streams:
    __slots__ = ("queue", "retx", "rx", "sched", "tx")

    def __init__(self, max_message: int) -> None:
        self.tx = [SendStream(c) for c in range(NUM_CLASSES)]
        self.rx = [RecvStream(c, max_message=max_message) for c in range(NUM_CLASSES)]
        self.retx: list[deque[SentFrame]] = [deque() for _ in range(NUM_CLASSES)]
        self.sched = Scheduler()
        # queue(cls, data, ts_us) -> message id: straight into the scheduler, which numbers
        # the messages of each class (one call per message on the hot path)
        self.queue = self.sched.queue

    def queued(self) -> list[OutMessage]:
        """Messages not yet wholly in frames, class by class."""
        return self.sched.messages()

    def resend(self, f: SentFrame) -> None:
        f.queued = True
        self.retx[f.cls].append(f)

    def inflight_frames(self) -> int:
        n = 0
        for tx in self.tx:
            n += tx.inflight_frames
        return n

    def inflight_bytes(self) -> int:
        n = 0
        for tx in self.tx:
            n += tx.inflight_bytes
        return n

    def next_resend(self, c: int, lim_f: int, lim_b: int) -> SentFrame | None:
        """The next frame of `c` to resend within the window, or None."""
        retx = self.retx[c]
        unacked = self.tx[c].unacked
        while retx:
            f = retx[0]
            if f.seq not in unacked:
                retx.popleft()
                f.queued = False
                continue
            if not f.in_flight and (
                self.inflight_frames() >= lim_f or self.inflight_bytes() + len(f.payload) > lim_b
            ):
                return None
            retx.popleft()
            f.queued = False
            return f
        return None

    def next_new(
        self, c: int, lim_f: int, lim_b: int, chunk: int
    ) -> tuple[SentFrame, FramePlan] | None:
        """The next new frame of `c` within the window (it gets its seq now), or None."""
        if not self.sched.has(c) or self.inflight_frames() >= lim_f:
            return None
        room = lim_b - self.inflight_bytes()
        if room <= 0:
            return None
        plan = self.sched.build(c, min(room, chunk))
        if plan is None:
            return None
        tx = self.tx[c]
        seq = tx.next_seq
        tx.next_seq = seq + 1
        f = SentFrame(c, seq, plan.flags, plan.payload, plan.ts_us, plan.done)
        tx.unacked[seq] = f
        return f, plan

    def has_queued(self, c: int) -> bool:
        return self.sched.has(c)

    @property
    def idle(self) -> bool:
        return not len(self.sched) and not any(tx.unacked for tx in self.tx)

    @property
    def queued_bytes(self) -> int:
        return self.sched.queued_bytes

    def ack_entries(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        return [
            (c, rx.ack_point, rx.ranges())
            for c, rx in enumerate(self.rx)
            if rx.next_seq or rx.buffer
        ]

    # -- durable state -------------------------------------------------------------------

    def export(self, snap: SessionSnapshot) -> None:
        for c in range(NUM_CLASSES):
            tx, rx = self.tx[c], self.rx[c]
            snap.send_next_seq[c] = tx.next_seq
            snap.send_next_index[c] = self.sched.next_index[c]
            snap.recv_next_seq[c] = rx.ack_point
            snap.recv_delivered[c] = rx.delivered
            for f in tx.unacked.values():
                snap.frames[(c, f.seq)] = StoredFrame(
                    c, f.seq, f.flags, f.payload, f.ts_us, f.msg_ids
                )
        for m in self.sched.messages():
            snap.messages[m.msg_id] = StoredMessage(m.msg_id, m.cls, m.data, m.ts_us, m.offset)

    def restore(self, snap: SessionSnapshot) -> None:
        for c in range(NUM_CLASSES):
            self.tx[c].next_seq = snap.send_next_seq[c]
            self.sched.next_index[c] = snap.send_next_index[c]
            self.rx[c].next_seq = snap.recv_next_seq[c]
            self.rx[c].delivered = snap.recv_delivered[c]
        for key in sorted(snap.frames):
            sf = snap.frames[key]
            f = SentFrame(sf.cls, sf.seq, sf.flags, sf.payload, sf.ts_us, sf.msg_ids)
            f.sends = 1
            self.tx[sf.cls].unacked[sf.seq] = f
            self.resend(f)
        for mid in sorted(snap.messages):
            m = snap.messages[mid]
            self.sched.push(OutMessage(m.msg_id, m.cls, m.data, m.ts_us, m.offset))
