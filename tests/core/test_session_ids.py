"""Message ids stay the sender's ids even when an authenticated peer sends a malformed DATA frame.

The receiver numbers messages per class; a DATA payload that passed the AEAD but
does not parse into whole messages (a BATCH whose record lengths do not add up,
a chunk out of order, an oversized message) leaves the count unknown. The
session must then close (code 2) without acking, never deliver a later message
under a shifted id.
"""

from __future__ import annotations

from typing import TypeVar

import pytest

from p2pmed.core.events import Event, FrameRejected, MessageAcked, MessageReceived, SessionClosed
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.reliability import LEN_PREFIX
from p2pmed.core.session import Session, SessionConfig, SessionState

CLS = MessageClass.MEDIUM
MAX_MESSAGE = 20_000
E = TypeVar("E")


class Pair:
    def __init__(self) -> None:
        self.now = 1000.0
        self.a = Session(SessionConfig("ids", True, Identity.generate()), now=self.now)
        cfg = SessionConfig("ids", False, Identity.generate(), max_message=MAX_MESSAGE)
        self.b = Session(cfg, now=self.now)
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        for s in (self.a, self.b):
            s.add_path("direct", self.now)
        self.a.connect(self.now)
        self.run(0.5)
        assert self.a.state is SessionState.ESTABLISHED
        assert self.b.state is SessionState.ESTABLISHED

    def pump(self) -> int:
        moved = 0
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            for path_id, data in src.datagrams_to_send(self.now):
                dst.receive(data, path_id, self.now)
                moved += 1
        for name, s in (("a", self.a), ("b", self.b)):
            while (ev := s.next_event()) is not None:
                self.events[name].append(ev)
        return moved

    def run(self, duration: float) -> None:
        """Exchange frames and fire timers for `duration` of simulated time (bounded)."""
        end = self.now + duration
        for _ in range(10_000):
            if self.pump():
                continue
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not timers or min(timers) > end:
                break
            self.now = max(self.now, min(timers))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        self.now = end

    def forge(self, flags: Flags, payload: bytes, *, claimed_messages: int) -> bytes:
        """A DATA frame sealed with a's real keys, as a buggy peer would build it.

        a's sequence and message counters move on as if the frame held
        `claimed_messages` messages, so a's later ids are what a buggy peer reports.
        """
        a = self.a
        c = int(CLS)
        seq = a._streams.tx[c].next_seq
        a._streams.tx[c].next_seq = seq + 1
        a._streams.sched.next_index[c] += claimed_messages
        assert a._prot.send is not None
        header = Header(FrameType.DATA, flags, CLS, 0, a._take_pn(), seq, 0, 0, 0)
        return a._prot.send.seal(header, payload)

    def of(self, name: str, kind: type[E]) -> list[E]:
        return [e for e in self.events[name] if isinstance(e, kind)]


def batch(*records: bytes, extra: int = 0) -> bytes:
    """BATCH payload; `extra` makes the last record claim more bytes than follow it."""
    parts = [
        LEN_PREFIX.pack(len(r) + (extra if i == len(records) - 1 else 0)) + r
        for i, r in enumerate(records)
    ]
    return b"".join(parts)


MALFORMED = {
    "batch_lengths_overrun": (Flags.BATCH, batch(b"one", b"two", extra=5), 2),
    "batch_truncated_prefix": (Flags.BATCH, batch(b"one") + b"\x00\x00", 2),
    "empty_batch": (Flags.BATCH, b"", 1),
    "continuation_without_first": (Flags.NONE, b"middle chunk", 1),
    "last_without_first": (Flags.LAST, b"last chunk", 1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_data_from_authenticated_peer_closes_without_shifting_ids(case: str) -> None:
    flags, payload, claimed = MALFORMED[case]
    p = Pair()
    sent: dict[int, bytes] = {}
    for i in range(3):
        data = f"before {i}".encode()
        sent[p.a.send(CLS, data, p.now)] = data
    p.run(0.5)
    acked_before = {e.message_id for e in p.of("a", MessageAcked)}
    assert acked_before == set(sent)
    acks_received = p.a.stats["acks_received"]

    bad = p.forge(flags, payload, claimed_messages=claimed)
    after_id = p.a.send(CLS, b"after", p.now)  # the sender's id counts the claimed messages
    p.b.receive(bad, "direct", p.now)
    p.run(2.0)

    # counted, reported, and the session is closed in a defined way
    assert p.b.stats["rejected_frame_payload"] == 1
    rejected = p.of("b", FrameRejected)
    kinds = [(e.reason, e.kind) for e in rejected]
    # frames a had in flight before it got the CLOSE are refused as state errors
    assert kinds[0] == ("payload", "frame") and set(kinds[1:]) <= {("state", "state")}
    assert p.b.state is SessionState.CLOSED
    closed_b = p.of("b", SessionClosed)
    assert len(closed_b) == 1 and closed_b[0].code == 2
    assert "protocol violation" in closed_b[0].reason
    # the peer is told (CLOSE), and nothing from the bad frame on is acked
    assert p.a.state is SessionState.CLOSED
    assert [e.code for e in p.of("a", SessionClosed)] == [2]
    assert p.a.stats["acks_received"] == acks_received
    acked = {e.message_id for e in p.of("a", MessageAcked)}
    assert after_id not in acked and acked == acked_before
    # every delivered message carries the id the sender gave it; none came with a shifted id
    got = {e.message_id: e.data for e in p.of("b", MessageReceived)}
    assert got == sent


def test_oversized_message_closes_instead_of_skipping() -> None:
    p = Pair()
    first = p.a.send(CLS, b"small", p.now)
    p.a.send(CLS, bytes(2 * MAX_MESSAGE), p.now)  # over b's max_message: 3 chunks
    p.run(2.0)
    assert p.b.stats["rejected_frame_payload"] == 1
    assert p.b.state is SessionState.CLOSED
    assert [e.code for e in p.of("b", SessionClosed)] == [2]
    got = [e.message_id for e in p.of("b", MessageReceived)]
    assert got == [first]


def test_well_formed_batches_and_chunks_keep_ids_in_step() -> None:
    p = Pair()
    sent: dict[int, bytes] = {}
    sizes = [3, 40, 0, 3000, 5, 7, 4000, 1, 2]  # batched small ones, chunked big ones
    for round_ in range(3):
        for i, size in enumerate(sizes):
            data = bytes([round_, i]) * (size // 2) + bytes(size % 2)
            sent[p.a.send(CLS, data, p.now)] = data
        p.run(0.5)
    got = [(e.message_id, e.data) for e in p.of("b", MessageReceived)]
    assert got == sorted(sent.items())
    assert p.b.stats["rejected_total"] == 0
    assert p.b.state is SessionState.ESTABLISHED
