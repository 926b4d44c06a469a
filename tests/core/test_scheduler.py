"""Priority scheduler: chunking, batching, budgets, strict class order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmed.core.frame import DEFAULT_CHUNK, MAX_CHUNK, Flags
from p2pmed.core.reliability import RecvStream, split_batch
from p2pmed.core.scheduler import OutMessage, Scheduler

FIRST, LAST, BATCH = int(Flags.FIRST), int(Flags.LAST), int(Flags.BATCH)


def _push(s: Scheduler, cls: int, data: bytes, mid: int) -> None:
    s.push(OutMessage(mid, cls, data, 0))


def test_single_message_is_first_and_last() -> None:
    s = Scheduler()
    _push(s, 2, b"hello", 1)
    plan = s.build(2)
    assert plan is not None
    assert (plan.flags, plan.payload, plan.done) == (FIRST | LAST, b"hello", (1,))
    assert s.build(2) is None
    assert s.queued_bytes == 0


def test_large_message_is_chunked_with_first_and_last() -> None:
    s = Scheduler()
    data = bytes(range(256)) * 200  # 51200 bytes
    _push(s, 4, data, 9)
    plans = []
    while (p := s.build(4)) is not None:
        plans.append(p)
    assert [p.flags for p in plans] == [FIRST, 0, 0, LAST]
    assert all(len(p.payload) <= DEFAULT_CHUNK for p in plans)
    assert b"".join(p.payload for p in plans) == data
    assert [p.done for p in plans] == [(), (), (), (9,)]
    assert [p.progress for p in plans[:3]] == [(9, 16384), (9, 32768), (9, 49152)]


def test_small_messages_are_batched_up_to_one_chunk() -> None:
    s = Scheduler()
    for i in range(1000):
        _push(s, 1, b"x" * 32, i)
    p = s.build(1)
    assert p is not None and p.flags == BATCH
    assert len(p.payload) <= DEFAULT_CHUNK
    assert len(p.done) == DEFAULT_CHUNK // 36
    msgs = split_batch(p.payload)
    assert msgs == [b"x" * 32] * len(p.done)


def test_budget_up_to_max_chunk_makes_larger_chunks() -> None:
    s = Scheduler()
    _push(s, 4, bytes(200_000), 1)
    p = s.build(4, budget=MAX_CHUNK + 1000)  # clamped to the protocol's limit
    assert p is not None and len(p.payload) == MAX_CHUNK


def test_budget_limits_payload_and_refuses_tiny_cuts() -> None:
    s = Scheduler()
    _push(s, 3, bytes(50_000), 1)
    assert s.build(3, budget=500) is None  # would cut a chunk below MIN_CHUNK
    p = s.build(3, budget=5000)
    assert p is not None and len(p.payload) == 5000 and p.flags == FIRST
    _push(s, 2, b"a" * 100, 2)
    _push(s, 2, b"b" * 100, 3)
    p = s.build(2, budget=150)  # only one fits
    assert p is not None and p.flags == FIRST | LAST and p.done == (2,)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=0, max_size=40_000), min_size=1, max_size=30),
    st.lists(st.integers(min_value=1024, max_value=MAX_CHUNK), min_size=1, max_size=8),
)
def test_any_mix_reassembles_exactly(messages: list[bytes], budgets: list[int]) -> None:
    s = Scheduler()
    for i, m in enumerate(messages):
        _push(s, 2, m, i)
    rx = RecvStream(2)
    out: list[bytes] = []
    seq = 0
    n = 0
    while (p := s.build(2, budgets[n % len(budgets)])) is not None:
        n += 1
        assert len(p.payload) <= MAX_CHUNK
        got = rx.messages(seq, p.flags, p.payload)
        assert got is not None
        out.extend(got)
        seq += 1
    assert out == messages
    assert s.queued_bytes == 0


def test_malformed_chunk_sequences_are_refused() -> None:
    rx = RecvStream(0)
    assert rx.messages(0, 0, b"middle without first") is None
    assert rx.messages(1, LAST, b"last without first") is None
    assert rx.messages(2, FIRST, b"a") == []
    assert rx.messages(3, FIRST | LAST, b"whole while partial") is None
    assert rx.messages(4, BATCH | FIRST, b"") is None
    assert rx.messages(5, BATCH, b"\x00\x00\x00\x05abc") is None  # length beyond payload
    assert rx.messages(6, BATCH, b"") is None
    assert rx.messages(7, BATCH, b"\x00\x00\x00\x01a\x00\x00") is None
    assert rx.messages(8, BATCH, b"\x00\x00\x00\x00") == [b""]


def test_oversized_reassembly_is_refused() -> None:
    rx = RecvStream(0, max_message=20_000)
    assert rx.messages(0, FIRST, bytes(16384)) == []
    assert rx.messages(1, 0, bytes(16384)) is None
    assert rx.partial is None
