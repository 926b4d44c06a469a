"""Per-class reliability: sequence numbers, selective acks, RTO (RFC 6298), reassembly.

Sans-IO and crypto-free: the Session feeds decrypted payloads in and takes
frames to (re)send out. Sequence numbers count DATA frames per class.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from dataclasses import dataclass

from p2pmed.core.errors import FrameError
from p2pmed.core.frame import NUM_CLASSES, Flags

ACK_HEAD = struct.Struct(">QIB")  # largest_pn, ack_delay_us, n
ACK_CLASS = struct.Struct(">BQB")  # class, cumulative, n_ranges
ACK_RANGE = struct.Struct(">QQ")  # [start, end)
MAX_RANGES = 32
LEN_PREFIX = struct.Struct(">I")
_FIRST = int(Flags.FIRST)
_LAST = int(Flags.LAST)
_BATCH = int(Flags.BATCH)
_FIRST_LAST = _FIRST | _LAST
_INF = 1 << 64

AckEntry = tuple[int, int, list[tuple[int, int]]]  # class, cumulative, ranges newest first


def encode_ack(largest_pn: int, ack_delay_us: int, entries: list[AckEntry]) -> bytes:
    parts = [ACK_HEAD.pack(largest_pn, min(ack_delay_us, 0xFFFFFFFF), len(entries))]
    for cls, cumulative, ranges in entries:
        ranges = ranges[:MAX_RANGES]
        parts.append(ACK_CLASS.pack(cls, cumulative, len(ranges)))
        parts.extend(ACK_RANGE.pack(start, end) for start, end in ranges)
    return b"".join(parts)


def decode_ack(payload: bytes) -> tuple[int, int, list[AckEntry]]:
    """Parse an ACK payload; raises FrameError("payload") on anything malformed."""
    try:
        largest_pn, delay, n = ACK_HEAD.unpack_from(payload, 0)
        off = ACK_HEAD.size
        entries: list[AckEntry] = []
        seen: set[int] = set()
        for _ in range(n):
            cls, cumulative, n_ranges = ACK_CLASS.unpack_from(payload, off)
            off += ACK_CLASS.size
            if cls >= NUM_CLASSES or cls in seen or n_ranges > MAX_RANGES:
                raise FrameError("payload", "bad ACK class entry")
            seen.add(cls)
            ranges: list[tuple[int, int]] = []
            for _ in range(n_ranges):
                start, end = ACK_RANGE.unpack_from(payload, off)
                off += ACK_RANGE.size
                if not cumulative <= start < end:
                    raise FrameError("payload", "bad ACK range")
                ranges.append((start, end))
            entries.append((cls, cumulative, ranges))
    except struct.error:
        raise FrameError("payload", "truncated ACK") from None
    if off != len(payload):
        raise FrameError("payload", "trailing bytes after ACK")
    return largest_pn, delay, entries


class RttEstimator:
    """RFC 6298 smoothed RTT and retransmission timeout, with exponential backoff."""

    __slots__ = ("backoff", "granularity", "max_rto", "min_rto", "rto", "rttvar", "srtt")

    def __init__(self, *, initial: float = 1.0, min_rto: float = 0.2, max_rto: float = 4.0) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = initial
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = 0.001
        self.backoff = 1

    def sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        rto = self.srtt + max(self.granularity, 4 * self.rttvar)
        self.rto = min(max(rto, self.min_rto), self.max_rto)

    def timeout(self) -> float:
        return min(self.rto * self.backoff, self.max_rto)

    def on_timeout(self) -> None:
        self.backoff = min(self.backoff * 2, 64)


@dataclass(slots=True, eq=False)
class SentFrame:
    """A DATA frame kept until cumulatively acked; resent with a fresh pn when lost."""

    cls: int
    seq: int
    flags: int
    payload: bytes
    ts_us: int
    msg_ids: tuple[int, ...]  # messages whose last byte is in this frame
    sent_at: float | None = None  # None: never sent
    pn: int = -1
    paths: tuple[str, ...] = ()
    sacked: bool = False
    queued: bool = False  # waiting in the retransmit queue
    in_flight: bool = False
    sends: int = 0


class SendStream:
    """Unacked DATA frames of one class, in seq order, with the in-flight count.

    In flight means transmitted and neither cumulatively acked nor sacked since.

    ACK processing costs O(ranges + frames whose state changed), not O(unacked): a
    multi-chunk message is only cumulatively acked once whole, so thousands of sacked
    frames can sit in `unacked`. The stream keeps the ranges of the previous ACK and
    walks only the difference, the in-flight frames in send order (`flight`), and a
    max-heap of sacked pns for the loss threshold.
    """

    __slots__ = (
        "cls",
        "dirty",
        "flight",
        "inflight_bytes",
        "inflight_frames",
        "next_seq",
        "reneged",
        "sack_heap",
        "sacked_count",
        "sacked_ranges",
        "unacked",
    )

    def __init__(self, cls: int, next_seq: int = 0) -> None:
        self.cls = cls
        self.next_seq = next_seq
        self.unacked: dict[int, SentFrame] = {}
        self.inflight_frames = 0
        self.inflight_bytes = 0
        self.flight: dict[int, SentFrame] = {}  # seq -> frame in flight, oldest send first
        self.reneged: dict[int, SentFrame] = {}  # sacked once, no longer reported, not resent
        self.sacked_ranges: list[tuple[int, int]] = []  # last ACK's ranges, sorted, merged
        self.dirty: list[int] = []  # sacked seqs resent since the last ACK (flag cleared)
        self.sack_heap: list[tuple[int, int]] = []  # (-pn, seq) of sacked frames, lazy
        self.sacked_count = 0

    def first_unacked(self) -> int:
        for seq in self.unacked:
            return seq
        return self.next_seq

    def mark_sent(self, f: SentFrame) -> None:
        """Call after a (re)transmission, with f.pn already set to the new pn."""
        seq = f.seq
        if f.in_flight:
            del self.flight[seq]  # re-inserted below: the flight is kept in send order
        else:
            f.in_flight = True
            self.inflight_frames += 1
            self.inflight_bytes += len(f.payload)
        self.flight[seq] = f
        if f.sacked:
            f.sacked = False
            self.sacked_count -= 1
            self.dirty.append(seq)
        self.reneged.pop(seq, None)

    def _leave_flight(self, f: SentFrame) -> None:
        if f.in_flight:
            f.in_flight = False
            del self.flight[f.seq]
            self.inflight_frames -= 1
            self.inflight_bytes -= len(f.payload)

    def _sack(self, f: SentFrame) -> None:
        if not f.sacked:
            f.sacked = True
            self.sacked_count += 1
            self._leave_flight(f)
            self.reneged.pop(f.seq, None)
            heap = self.sack_heap
            heapq.heappush(heap, (-f.pn, f.seq))
            if len(heap) > 64 and len(heap) > 2 * self.sacked_count:
                # drop stale and repeated entries: amortised O(1) per push
                unacked = self.unacked
                heap[:] = list({e for e in heap if _live(unacked, e)})
                heapq.heapify(heap)

    def on_cumulative(self, cumulative: int) -> list[SentFrame]:
        """Drop and return every frame below `cumulative` (ignores values never sent)."""
        if cumulative > self.next_seq:
            cumulative = self.next_seq
        done: list[SentFrame] = []
        unacked = self.unacked
        while unacked:
            seq = next(iter(unacked))
            if seq >= cumulative:
                break
            f = unacked.pop(seq)
            self._leave_flight(f)
            if f.sacked:
                self.sacked_count -= 1  # its heap entry goes stale
            self.reneged.pop(seq, None)
            done.append(f)
        if not unacked:
            self.sack_heap.clear()
            self.sacked_count = 0
            self.dirty.clear()
        return done

    def on_ranges(self, ranges: list[tuple[int, int]], threshold: int = 3) -> list[SentFrame]:
        """Recompute sacked flags from the newest ACK; return frames deemed lost.

        A frame is lost when at least `threshold` sacked frames were sent after it
        (higher pn), like QUIC's packet threshold. A frame the peer no longer
        reports (it restarted and dropped its buffer) becomes a retransmit candidate.
        """
        unacked = self.unacked
        new = _normalise(ranges, self.first_unacked(), self.next_seq)
        old = _clip(self.sacked_ranges, self.first_unacked())
        self.sacked_ranges = new
        for start, end in _subtract(old, new):
            for seq in range(start, end):
                f = unacked.get(seq)
                if f is not None and f.sacked:
                    f.sacked = False
                    self.sacked_count -= 1
                    self.reneged[seq] = f
        for start, end in _subtract(new, old):
            for seq in range(start, end):
                f = unacked.get(seq)
                if f is not None:
                    self._sack(f)
        if self.dirty:
            for seq in self.dirty:
                f = unacked.get(seq)
                if f is not None and _covers(new, seq):
                    self._sack(f)
            self.dirty = []
        if not new or self.sacked_count < threshold:
            return []
        limit = self._pn_limit(threshold)
        lost: list[SentFrame] = []
        for f in self.flight.values():  # in send order, so in pn order
            if f.pn >= limit:
                break
            if not f.queued:
                lost.append(f)
        if len(lost) > 1:
            lost.sort(key=_seq)  # resend in seq order: the receiver can deliver sooner
        return lost

    def _pn_limit(self, threshold: int) -> int:
        """The `threshold`-th largest pn among sacked frames (sacked_count >= threshold)."""
        heap = self.sack_heap
        unacked = self.unacked
        top: list[tuple[int, int]] = []
        while len(top) < threshold and heap:
            e = heapq.heappop(heap)
            if _live(unacked, e) and (not top or top[-1] != e):
                top.append(e)
        for e in top:
            heapq.heappush(heap, e)
        return -top[-1][0] if len(top) == threshold else -1


def _seq(f: SentFrame) -> int:
    return f.seq


def _live(unacked: dict[int, SentFrame], entry: tuple[int, int]) -> bool:
    f = unacked.get(entry[1])
    return f is not None and f.sacked and f.pn == -entry[0]


def _normalise(ranges: list[tuple[int, int]], low: int, high: int) -> list[tuple[int, int]]:
    """Ranges clipped to [low, high), sorted and merged."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        start = max(start, low)
        end = min(end, high)
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _clip(ranges: list[tuple[int, int]], low: int) -> list[tuple[int, int]]:
    return [(max(s, low), e) for s, e in ranges if e > low]


def _subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of sorted disjoint ranges `a` not covered by sorted disjoint ranges `b`."""
    out: list[tuple[int, int]] = []
    j = 0
    nb = len(b)
    for start, end in a:
        while j < nb and b[j][1] <= start:
            j += 1
        k = j
        while start < end:
            if k >= nb or b[k][0] >= end:
                out.append((start, end))
                break
            bs, be = b[k]
            if bs > start:
                out.append((start, bs))
            start = max(start, be)
            k += 1
    return out


def _covers(ranges: list[tuple[int, int]], seq: int) -> bool:
    i = bisect.bisect_right(ranges, (seq, _INF)) - 1
    return i >= 0 and ranges[i][0] <= seq < ranges[i][1]


class RecvStream:
    """Receive side of one class: dedupe, reorder, reassemble, deliver in seq order."""

    __slots__ = (
        "buffer",
        "cls",
        "delivered",
        "max_ahead",
        "max_message",
        "next_seq",
        "partial",
        "partial_bytes",
        "partial_start",
    )

    def __init__(
        self,
        cls: int,
        next_seq: int = 0,
        delivered: int = 0,
        *,
        max_ahead: int = 4096,
        max_message: int = 64 * 1024 * 1024,
    ) -> None:
        self.cls = cls
        self.next_seq = next_seq  # everything below was handed to the application
        self.delivered = delivered  # messages handed over so far
        self.buffer: dict[int, tuple[int, bytes, int]] = {}
        self.partial: list[bytes] | None = None
        self.partial_start = 0  # seq of the first chunk in `partial`
        self.partial_bytes = 0  # sum of the chunk sizes in `partial`
        self.max_ahead = max_ahead
        self.max_message = max_message

    def accepts(self, seq: int) -> int:
        """1: new, 0: duplicate, -1: too far ahead of the window."""
        if seq < self.next_seq or seq in self.buffer:
            return 0
        if seq >= self.next_seq + self.max_ahead:
            return -1
        return 1

    def push(self, seq: int, flags: int, payload: bytes, ts_us: int) -> None:
        self.buffer[seq] = (flags, payload, ts_us)

    def pop_ready(self) -> list[tuple[int, int, bytes, int]]:
        """Take in-order frames: list of (seq, flags, payload, ts_us)."""
        out: list[tuple[int, int, bytes, int]] = []
        buf = self.buffer
        seq = self.next_seq
        while seq in buf:
            flags, payload, ts = buf.pop(seq)
            out.append((seq, flags, payload, ts))
            seq += 1
        self.next_seq = seq
        return out

    @property
    def ack_point(self) -> int:
        """Cumulative ack: chunks of a message not yet whole are received, not delivered."""
        return self.partial_start if self.partial is not None else self.next_seq

    def messages(self, seq: int, flags: int, payload: bytes) -> list[bytes] | None:
        """Whole messages completed by one in-order frame; None if the payload is malformed."""
        if flags == _FIRST_LAST:
            if self.partial is not None:
                self.partial = None
                return None
            return [payload]
        if flags == _BATCH:
            if self.partial is not None:
                self.partial = None
                return None
            return split_batch(payload)
        if flags == _FIRST:
            bad = self.partial is not None
            self.partial = [payload]
            self.partial_start = seq
            self.partial_bytes = len(payload)
            return None if bad else []
        if flags & _BATCH or flags & _FIRST:
            self.partial = None
            return None
        if self.partial is None:
            return None
        self.partial.append(payload)
        self.partial_bytes += len(payload)
        if self.partial_bytes > self.max_message:
            self.partial = None
            return None
        if flags == _LAST:
            data = b"".join(self.partial)
            self.partial = None
            return [data]
        return []

    def ranges(self) -> list[tuple[int, int]]:
        """Received, undelivered seqs as half-open ranges, newest first, at most 32."""
        tail = [(self.partial_start, self.next_seq)] if self.partial is not None else []
        if not self.buffer:
            return tail
        seqs = sorted(self.buffer, reverse=True)
        out: list[tuple[int, int]] = []
        end = seqs[0] + 1
        start = seqs[0]
        for s in seqs[1:]:
            if s == start - 1:
                start = s
                continue
            out.append((start, end))
            if len(out) == MAX_RANGES:
                return out
            start, end = s, s + 1
        out.append((start, end))
        out.extend(tail)
        return out[:MAX_RANGES]


def split_batch(payload: bytes) -> list[bytes] | None:
    out: list[bytes] = []
    off = 0
    n = len(payload)
    unpack = LEN_PREFIX.unpack_from
    while off < n:
        if off + 4 > n:
            return None
        (length,) = unpack(payload, off)
        off += 4
        end = off + length
        if end > n:
            return None
        out.append(payload[off:end])
        off = end
    return out if out else None


@dataclass(slots=True)
class AckState:
    """What the receiver owes the peer in its next ACK frame."""

    largest_pn: int = -1
    largest_at: float | None = None  # when largest_pn came in; None: nothing yet
    unacked_frames: int = 0
    unacked_bytes: int = 0
    deadline: float | None = None
    immediate: bool = False
    critical: bool = False  # send the ACK on every live path
    path: str = ""  # where the latest DATA came from
