"""Loss recovery of a Session: incoming ACKs, RTT samples, the RTO timer and failover resends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pmed.core.events import MessageAcked
from p2pmed.core.frame import MessageClass
from p2pmed.core.persist import FramesAcked
from p2pmed.core.reliability import RttEstimator, decode_ack

if TYPE_CHECKING:
    from p2pmed.core.session import Session

_CLASSES = list(MessageClass)
MAX_SEND_TIMES = 4096


class Recovery:
    __slots__ = ("_s", "largest_acked_pn", "retx", "rto_deadline", "rtt", "sent_pn", "stats", "tx")

    def __init__(self, session: Session) -> None:
        cfg = session.config
        self._s = session
        self.tx = session._tx
        self.retx = session._retx
        self.stats = session.stats
        self.rtt = RttEstimator(initial=cfg.initial_rto, min_rto=cfg.min_rto, max_rto=cfg.max_rto)
        self.rto_deadline: float | None = None
        self.sent_pn: dict[int, float] = {}  # send times for RTT samples
        self.largest_acked_pn = -1

    def on_ack(self, payload: bytes, now: float) -> None:
        largest_pn, delay_us, entries = decode_ack(payload)
        self.stats["acks_received"] += 1
        fresh = largest_pn >= self.largest_acked_pn
        if largest_pn > self.largest_acked_pn:
            sent = self.sent_pn
            sent_at = sent.get(largest_pn)
            if sent_at is not None:
                sample = now - sent_at
                delay = delay_us / 1e6
                if sample > delay:
                    sample -= delay
                self.rtt.sample(sample)
            self.largest_acked_pn = largest_pn
            while sent:
                first = next(iter(sent))
                if first > largest_pn:
                    break
                del sent[first]
        progress = False
        for c, cumulative, ranges in entries:
            if self.on_cumulative(c, cumulative):
                progress = True
            if fresh:
                for f in self.tx[c].on_ranges(ranges):
                    f.queued = True
                    self.retx[c].append(f)
                    self.stats["fast_retransmits"] += 1
        if progress:
            self.rtt.backoff = 1
        self.arm_rto()

    def on_cumulative(self, c: int, cumulative: int) -> bool:
        done = self.tx[c].on_cumulative(cumulative)
        if not done:
            return False
        cls = _CLASSES[c]
        events = self._s._events
        n = 0
        for f in done:
            for mid in f.msg_ids:
                events.append(MessageAcked(mid, cls))
                n += 1
        self.stats["messages_acked"] += n
        if self._s._persist:
            self._s._changes.append(FramesAcked(c, done[-1].seq + 1))
        return True

    def on_timer(self, now: float) -> None:
        if self.rto_deadline is None or now < self.rto_deadline:
            return
        timeout = self.rtt.timeout()
        self.stats["rto_timeouts"] += 1
        for c, tx in enumerate(self.tx):
            for f in tx.unacked.values():
                sent_at = f.sent_at
                if (
                    not f.sacked
                    and not f.queued
                    and sent_at is not None
                    and sent_at + timeout <= now
                ):
                    f.queued = True
                    self.retx[c].append(f)
        self.rtt.on_timeout()
        sent = self.sent_pn  # bounded while no ACK comes back
        while len(sent) > MAX_SEND_TIMES:
            del sent[next(iter(sent))]
        self.rto_deadline = now + self.rtt.timeout() if any(tx.unacked for tx in self.tx) else None

    def arm_rto(self) -> None:
        # The oldest send among frames neither sacked nor queued: the first such frame in
        # flight (kept in send order), or a frame the peer sacked and then stopped reporting
        # (it restarted): out of flight, yet only the RTO resends it.
        oldest: float | None = None
        for tx in self.tx:
            for f in tx.flight.values():
                if not f.queued:
                    if f.sent_at is not None and (oldest is None or f.sent_at < oldest):
                        oldest = f.sent_at
                    break
            for f in tx.reneged.values():
                sent_at = f.sent_at
                if sent_at is not None and not f.queued and (oldest is None or sent_at < oldest):
                    oldest = sent_at
        self.rto_deadline = None if oldest is None else oldest + self.rtt.timeout()

    def reroute(self) -> None:
        """Resend at once every unacked frame that was only on paths now dead or gone."""
        s = self._s
        alive = {pid for pid, p in s._heartbeat.paths.items() if p.alive}
        for c, tx in enumerate(self.tx):
            for f in tx.unacked.values():
                if f.queued or f.sacked or not f.sends:
                    continue
                if not any(pid in alive for pid in f.paths):
                    f.queued = True
                    self.retx[c].append(f)
                    self.stats["failover_resends"] += 1
        if s._ack.largest_pn >= 0:
            s._ack.immediate = True
