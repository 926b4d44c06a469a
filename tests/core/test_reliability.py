"""ACK codec, RTO estimator (RFC 6298), send/receive streams."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmed.core.errors import FrameError
from p2pmed.core.reliability import (
    RecvStream,
    RttEstimator,
    SendStream,
    SentFrame,
    decode_ack,
    encode_ack,
)


def test_ack_roundtrip_and_layout() -> None:
    entries = [(0, 5, [(9, 12), (6, 8)]), (3, 100, [])]
    payload = encode_ack(77, 1500, entries)
    assert payload[:13] == (77).to_bytes(8, "big") + (1500).to_bytes(4, "big") + b"\x02"
    assert len(payload) == 13 + 10 + 32 + 10
    assert decode_ack(payload) == (77, 1500, entries)


ranges_st = st.lists(
    st.tuples(st.integers(0, 2**40), st.integers(1, 1000)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=32,
)


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.dictionaries(st.integers(0, 4), ranges_st, max_size=5),
)
def test_ack_roundtrip_property(largest: int, delay: int, classes: dict[int, list]) -> None:  # type: ignore[type-arg]
    entries = [(c, 0, r) for c, r in classes.items()]
    assert decode_ack(encode_ack(largest, delay, entries)) == (largest, delay, entries)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        bytes(12),
        bytes(13) + b"x",  # trailing byte
        bytes(12) + b"\x01" + b"\x05" + bytes(9),  # class 5
        bytes(12) + b"\x02" + b"\x01" + bytes(9) + b"\x01" + bytes(9),  # duplicate class
        bytes(12) + b"\x01" + b"\x01" + bytes(8) + b"\x21",  # 33 ranges
        bytes(12)
        + b"\x01"
        + b"\x01"
        + (10).to_bytes(8, "big")
        + b"\x01"
        + (5).to_bytes(8, "big")
        + (9).to_bytes(8, "big"),  # range below cumulative
        bytes(12)
        + b"\x01"
        + b"\x01"
        + bytes(8)
        + b"\x01"
        + (9).to_bytes(8, "big")
        + (9).to_bytes(8, "big"),  # empty range
        bytes(12) + b"\x01" + b"\x01" + bytes(8) + b"\x01" + bytes(15),  # truncated range
    ],
)
def test_ack_decode_refuses_malformed(payload: bytes) -> None:
    with pytest.raises(FrameError) as e:
        decode_ack(payload)
    assert e.value.reason == "payload"


@given(st.binary(max_size=200))
def test_ack_decode_raises_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_ack(data)


def test_rto_follows_rfc6298() -> None:
    r = RttEstimator(initial=1.0, min_rto=0.2, max_rto=4.0)
    assert r.timeout() == 1.0
    r.sample(0.1)  # first: SRTT=R, RTTVAR=R/2, RTO=SRTT+4*RTTVAR
    assert r.srtt == pytest.approx(0.1)
    assert r.rttvar == pytest.approx(0.05)
    assert r.rto == pytest.approx(0.3)
    r.sample(0.3)
    assert r.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert r.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    r.on_timeout()
    assert r.timeout() == pytest.approx(min(2 * r.rto, 4.0))
    for _ in range(10):
        r.on_timeout()
    assert r.timeout() == 4.0  # capped
    fast = RttEstimator(min_rto=0.2)
    fast.sample(0.001)
    assert fast.rto == 0.2  # floor


def _frame(seq: int, pn: int, size: int = 10) -> SentFrame:
    return SentFrame(2, seq, 3, bytes(size), 0, (seq,), pn=pn)


def test_send_stream_cumulative_sack_and_fast_retransmit() -> None:
    s = SendStream(2)
    frames = [_frame(i, 100 + i) for i in range(8)]
    for f in frames:
        s.unacked[f.seq] = f
        s.mark_sent(f)
    s.next_seq = 8
    assert (s.inflight_frames, s.inflight_bytes) == (8, 80)
    assert s.on_cumulative(2) == frames[:2]
    assert s.first_unacked() == 2
    lost = s.on_ranges([(4, 8)])  # 2 and 3 missing, 4 frames sent after them arrived
    assert lost == [frames[2], frames[3]]
    assert s.inflight_frames == 2  # sacked frames left the window
    assert s.on_cumulative(50) == frames[2:]  # clamped to what was sent
    assert (s.inflight_frames, s.inflight_bytes) == (0, 0)


def test_send_stream_reneging_makes_frames_candidates_again() -> None:
    s = SendStream(1)
    for i in range(4):
        f = _frame(i, i)
        s.unacked[i] = f
        s.mark_sent(f)
    s.next_seq = 4
    s.on_ranges([(1, 4)])
    assert [f.sacked for f in s.unacked.values()] == [False, True, True, True]
    s.on_ranges([])  # the receiver restarted and lost its buffer
    assert not any(f.sacked for f in s.unacked.values())
    assert s.inflight_frames == 1  # not counted until resent


def test_recv_stream_reorders_dedupes_and_reports_ranges() -> None:
    r = RecvStream(0, max_ahead=100)
    assert r.accepts(0) == 1
    for seq in (3, 4, 7, 9):
        r.push(seq, 3, b"m%d" % seq, 0)
    assert r.pop_ready() == []
    assert r.ranges() == [(9, 10), (7, 8), (3, 5)]
    assert r.accepts(3) == 0
    assert r.accepts(100) == -1
    r.push(0, 3, b"m0", 0)
    assert [x[0] for x in r.pop_ready()] == [0]
    r.push(1, 3, b"m1", 0)
    r.push(2, 3, b"m2", 0)
    assert [x[0] for x in r.pop_ready()] == [1, 2, 3, 4]
    assert r.next_seq == 5 and r.accepts(4) == 0


def test_ack_point_stops_before_an_incomplete_message() -> None:
    r = RecvStream(0)
    r.next_seq = 11
    assert r.messages(10, 1, b"first chunk") == []
    assert r.ack_point == 10  # not delivered yet: not acked
    assert r.ranges() == [(10, 11)]  # but reported as received
    r.next_seq = 12
    assert r.messages(11, 2, b" last") == [b"first chunk last"]
    assert r.ack_point == 12 and r.ranges() == []


def test_ranges_cap_at_32() -> None:
    r = RecvStream(0)
    for seq in range(1, 200, 2):
        r.push(seq, 3, b"", 0)
    rs = r.ranges()
    assert len(rs) == 32 and rs[0] == (199, 200)


def test_send_stream_resent_sacked_frame_is_sacked_again_by_the_next_ack() -> None:
    s = SendStream(2)
    for i in range(8):
        f = _frame(i, 10 + i)
        s.unacked[i] = f
        s.mark_sent(f)
    s.next_seq = 8
    s.on_ranges([(2, 5)])
    resent = s.unacked[3]
    resent.pn = 50
    s.mark_sent(resent)  # resent anyway (e.g. queued before the sack arrived)
    assert not resent.sacked and resent.in_flight
    assert s.inflight_frames == 6
    lost = s.on_ranges([(2, 5)])  # same report: the frame counts as sacked again
    assert resent.sacked and not resent.in_flight
    assert s.inflight_frames == 5
    assert [f.seq for f in lost] == [0, 1]  # 3 sacked frames were sent after them


def test_send_stream_hostile_ranges_are_clipped_and_merged() -> None:
    s = SendStream(2)
    for i in range(6):
        f = _frame(i, i)
        s.unacked[i] = f
        s.mark_sent(f)
    s.next_seq = 6
    s.on_cumulative(1)
    lost = s.on_ranges([(3, 2**64 - 1), (1, 4), (2, 3)])  # overlapping, beyond what was sent
    assert [f.sacked for f in s.unacked.values()] == [True] * 5
    assert lost == [] and s.inflight_frames == 0
    s.on_ranges([(4, 5)])  # the peer stopped reporting the others
    assert [f.seq for f in s.unacked.values() if f.sacked] == [4]
    assert sorted(s.reneged) == [1, 2, 3, 5]
    assert s.inflight_frames == 0  # not in flight again until resent


class _Ref:
    """The plain O(unacked) rules the send stream must keep: a reference model."""

    def __init__(self) -> None:
        self.frames: dict[int, dict[str, int | bool]] = {}

    def send(self, seq: int, pn: int) -> None:
        f = self.frames.setdefault(seq, {"queued": False})
        f.update(pn=pn, sacked=False, in_flight=True)

    def ack(self, cumulative: int, ranges: list[tuple[int, int]]) -> list[int]:
        for seq in [s for s in self.frames if s < cumulative]:
            del self.frames[seq]
        if not ranges:
            for f in self.frames.values():
                f["sacked"] = False
            return []
        pns = []
        for seq, f in self.frames.items():
            if any(a <= seq < b for a, b in ranges):
                f["sacked"], f["in_flight"] = True, False
                pns.append(int(f["pn"]))
            else:
                f["sacked"] = False
        if len(pns) < 3:
            return []
        limit = sorted(pns)[-3]
        lost = [
            seq
            for seq, f in self.frames.items()
            if not f["sacked"] and not f["queued"] and f["in_flight"] and int(f["pn"]) < limit
        ]
        for seq in lost:
            self.frames[seq]["queued"] = True
        return lost


_op = st.one_of(
    st.tuples(st.just("new"), st.integers(1, 4)),
    st.tuples(st.just("resend"), st.integers(0, 63)),
    st.tuples(
        st.just("ack"),
        st.integers(0, 3),
        st.lists(st.tuples(st.integers(0, 24), st.integers(1, 8)), max_size=4),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_op, max_size=60))
def test_send_stream_matches_the_reference_rules(ops: list[tuple[object, ...]]) -> None:
    s = SendStream(2)
    ref = _Ref()
    pn = 0
    for op in ops:
        if op[0] == "new":
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                f = _frame(s.next_seq, pn)
                s.unacked[f.seq] = f
                s.next_seq += 1
                s.mark_sent(f)
                ref.send(f.seq, pn)
                pn += 1
        elif op[0] == "resend" and s.unacked:
            seqs = list(s.unacked)
            f = s.unacked[seqs[int(op[1]) % len(seqs)]]  # type: ignore[call-overload]
            f.queued = False
            f.pn = pn
            s.mark_sent(f)
            ref.frames[f.seq]["queued"] = False
            ref.send(f.seq, pn)
            pn += 1
        elif op[0] == "ack":
            cumulative = s.first_unacked() + int(op[1])  # type: ignore[call-overload]
            ranges = [(cumulative + a, cumulative + a + n) for a, n in op[2]]  # type: ignore[attr-defined]
            s.on_cumulative(cumulative)
            lost = s.on_ranges(ranges)
            for f in lost:
                f.queued = True
            assert [f.seq for f in lost] == ref.ack(cumulative, ranges)
        assert list(s.unacked) == list(ref.frames)
        for seq, f in s.unacked.items():
            r = ref.frames[seq]
            assert (f.sacked, f.in_flight) == (r["sacked"], r["in_flight"])
        in_flight = [f for f in s.unacked.values() if f.in_flight]
        assert s.inflight_frames == len(in_flight)
        assert s.inflight_bytes == sum(len(f.payload) for f in in_flight)
