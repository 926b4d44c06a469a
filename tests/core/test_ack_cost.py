"""ACK processing cost: frames examined per ACK must not grow with the frames in flight/unacked.

A multi-chunk message is cumulatively acked only once whole, so all its chunks stay unacked
(sacked) until the last one arrives; an ACK that rescans them makes a large transfer O(n^2).
These tests count dictionary reads of the send stream's frame tables, not time.
"""

from __future__ import annotations

from collections.abc import Iterator

from p2pmed.core.events import MessageReceived
from p2pmed.core.frame import MessageClass
from p2pmed.core.reliability import SendStream, SentFrame
from tests.core.sessionkit import establish, of
from tests.core.simnet import make_pair


class CountingDict(dict[int, SentFrame]):
    """A frame table that counts every frame read out of it."""

    examined = 0

    def get(self, key: int, default: SentFrame | None = None) -> SentFrame | None:  # type: ignore[override]
        value = super().get(key, default)
        if value is not None:
            self.examined += 1
        return value

    def __getitem__(self, key: int) -> SentFrame:
        self.examined += 1
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[int]:
        for key in super().__iter__():
            self.examined += 1
            yield key

    def values(self) -> Iterator[SentFrame]:  # type: ignore[override]
        for value in super().values():
            self.examined += 1
            yield value

    def items(self) -> Iterator[tuple[int, SentFrame]]:  # type: ignore[override]
        for item in super().items():
            self.examined += 1
            yield item


def _counted(s: SendStream) -> list[CountingDict]:
    tables = [CountingDict(s.unacked), CountingDict(s.flight), CountingDict(s.reneged)]
    s.unacked, s.flight, s.reneged = tables
    return tables


def _examined(tables: list[CountingDict]) -> int:
    return sum(t.examined for t in tables)


def _chunked_transfer(n: int, missing: int | None = None) -> tuple[list[int], list[SentFrame]]:
    """n chunks of one message, an ACK per 4 frames sent; cumulative stays at the first chunk."""
    s = SendStream(3)
    tables = _counted(s)
    per_ack: list[int] = []
    lost: list[SentFrame] = []
    for seq in range(n):
        f = SentFrame(3, seq, 0, bytes(10), 0, ())
        s.unacked[seq] = f
        s.next_seq = seq + 1
        f.pn = 100 + seq
        s.mark_sent(f)
        if seq % 4 == 3:
            ranges = [(0, seq + 1)]
            if missing is not None and missing <= seq:
                ranges = [(missing + 1, seq + 1), (0, missing)]
            before = _examined(tables)
            s.on_cumulative(0)
            for f in s.on_ranges(ranges):
                f.queued = True  # as Recovery does: now in the retransmit queue
                lost.append(f)
            per_ack.append(_examined(tables) - before)
    return per_ack, lost


def test_frames_examined_per_ack_do_not_grow_with_unacked() -> None:
    small, _ = _chunked_transfer(256)
    large, _ = _chunked_transfer(4096)
    # each ACK sacks the 4 frames sent since the previous one, whatever sits below them
    assert max(large) == max(small)
    assert max(large) <= 16


def test_loss_is_still_detected_and_reported_once() -> None:
    per_ack, lost = _chunked_transfer(4096, missing=1000)
    assert [f.seq for f in lost] == [1000]
    assert max(per_ack) <= 16


def _session_transfer(size: int) -> list[int]:
    """One LOW message of `size` bytes between two Sessions; per ACK received by the sender,
    the frames examined beyond two per frame whose state that ACK changed."""
    net, a, _b = make_pair(7)
    establish(net)
    tx = a._streams.tx[int(MessageClass.LOW)]
    tables = _counted(tx)
    costs: list[int] = []
    receive = a.receive

    def counting_receive(data: bytes, path_id: str, now: float) -> None:
        sacked = {f.seq for f in dict.values(tx.unacked) if f.sacked}
        before = _examined(tables)
        receive(data, path_id, now)
        after = {f.seq for f in dict.values(tx.unacked) if f.sacked}
        removed = sum(1 for seq in sacked if seq not in tx.unacked)
        changed = removed + len(after ^ sacked)  # acked, newly sacked or no longer sacked
        costs.append(_examined(tables) - before - 2 * changed)

    a.receive = counting_receive  # type: ignore[method-assign]
    data = bytes(range(256)) * (size // 256)
    mid = net.call("a", lambda s: s.send(MessageClass.LOW, data, net.now))
    received = net.ends["b"].events
    net.run(lambda: not tx.unacked and bool(of(received, MessageReceived)))
    got = [(e.message_id, e.data == data) for e in received if isinstance(e, MessageReceived)]
    assert got == [(mid, True)]
    assert a.stats["acks_received"] > size // (16384 * 8)  # many ACKs during the message
    return costs


def test_session_ack_cost_is_flat_over_a_large_message() -> None:
    small = max(_session_transfer(2 << 20))  # 128 chunks
    large = max(_session_transfer(8 << 20))  # 512 chunks
    assert large <= small
    assert large <= 32


def test_sack_bookkeeping_stays_bounded_over_a_long_session() -> None:
    s = SendStream(1)
    largest = 0
    for seq in range(20_000):  # steady traffic: each frame sacked, then cumulatively acked
        f = SentFrame(1, seq, 3, bytes(10), 0, (seq,), pn=seq)
        s.unacked[seq] = f
        s.next_seq = seq + 1
        s.mark_sent(f)
        s.on_cumulative(seq - 1)
        s.on_ranges([(seq, seq + 1)])
        largest = max(largest, len(s.sack_heap))
    for i in range(20_000):  # a peer that keeps dropping and re-reporting one frame
        s.on_ranges([(s.next_seq - 1, s.next_seq)] if i % 2 else [])
        largest = max(largest, len(s.sack_heap))
    assert largest <= 65
    assert len(s.unacked) == 2 and not s.dirty
