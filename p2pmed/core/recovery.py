"""Loss recovery: RTT samples from ACKs, the RTO timer and failover resends.

Owns the RTT estimator, the RTO deadline and the send times of recent pns. Given the
streams (and the live paths) per call; returns what was acked or lost, queueing lost
frames for resending on the streams.
"""

from __future__ import annotations

from p2pmed.core.reliability import AckEntry, RttEstimator, SentFrame
from p2pmed.core.streams import Streams

MAX_SEND_TIMES = 4096

Acked = list[tuple[int, list[SentFrame]]]  # (class, frames cumulatively acked), oldest first


class Recovery:
    __slots__ = ("largest_acked_pn", "rto_deadline", "rtt", "sent_pn")

    def __init__(self, *, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.rtt = RttEstimator(initial=initial_rto, min_rto=min_rto, max_rto=max_rto)
        self.rto_deadline: float | None = None
        self.sent_pn: dict[int, float] = {}  # send times for RTT samples
        self.largest_acked_pn = -1

    def on_sent(self, pn: int, now: float) -> None:
        self.sent_pn[pn] = now
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.timeout()

    def on_ack(
        self,
        streams: Streams,
        largest_pn: int,
        delay_us: int,
        entries: list[AckEntry],
        now: float,
    ) -> tuple[Acked, int]:
        """A decoded ACK. Returns (acked, number of frames deemed lost and queued)."""
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
        acked: Acked = []
        lost = 0
        for c, cumulative, ranges in entries:
            done = streams.tx[c].on_cumulative(cumulative)
            if done:
                acked.append((c, done))
            if fresh:
                for f in streams.tx[c].on_ranges(ranges):
                    streams.resend(f)
                    lost += 1
        if acked:
            self.rtt.backoff = 1
        self.arm_rto(streams)
        return acked, lost

    def on_cumulative(self, streams: Streams, c: int, cumulative: int) -> list[SentFrame]:
        """The cumulative ack a DATA header carries; returns the frames it acked."""
        done = streams.tx[c].on_cumulative(cumulative)
        self.arm_rto(streams)
        return done

    def on_timer(self, streams: Streams, now: float) -> bool:
        """True if the RTO fired (frames older than the timeout are queued for resending)."""
        if self.rto_deadline is None or now < self.rto_deadline:
            return False
        timeout = self.rtt.timeout()
        for tx in streams.tx:
            for f in tx.unacked.values():
                sent_at = f.sent_at
                if (
                    not f.sacked
                    and not f.queued
                    and sent_at is not None
                    and sent_at + timeout <= now
                ):
                    streams.resend(f)
        self.rtt.on_timeout()
        sent = self.sent_pn  # bounded while no ACK comes back
        while len(sent) > MAX_SEND_TIMES:
            del sent[next(iter(sent))]
        busy = any(tx.unacked for tx in streams.tx)
        self.rto_deadline = now + self.rtt.timeout() if busy else None
        return True

    def arm_rto(self, streams: Streams) -> None:
        # The oldest send among frames neither sacked nor queued: the first such frame in
        # flight (kept in send order), or a frame the peer sacked and then stopped reporting
        # (it restarted): out of flight, yet only the RTO resends it.
        oldest: float | None = None
        for tx in streams.tx:
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

    def reroute(self, streams: Streams, live: set[str]) -> int:
        """Queue at once every unacked frame that was only on paths not in `live`; returns
        how many."""
        n = 0
        for tx in streams.tx:
            for f in tx.unacked.values():
                if f.queued or f.sacked or not f.sends:
                    continue
                if not any(pid in live for pid in f.paths):
                    streams.resend(f)
                    n += 1
        return n
