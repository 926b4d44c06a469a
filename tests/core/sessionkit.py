"""Helpers shared by the session tests: workloads and exactly-once checks."""

from __future__ import annotations

import random

from p2pmed.core.events import Event, HandshakeCompleted, MessageAcked, MessageReceived
from p2pmed.core.frame import MessageClass
from p2pmed.core.session import Session, SessionState
from tests.core.simnet import SimNet

Sent = dict[int, tuple[MessageClass, bytes]]  # message id -> (class, data)


def of(events: list[Event], kind: type) -> list[object]:
    return [e for e in events if isinstance(e, kind)]


def establish(net: SimNet, max_time: float = 30.0) -> None:
    a, b = net.ends["a"], net.ends["b"]
    net.run(
        lambda: (
            bool(of(a.events, HandshakeCompleted))
            and bool(of(b.events, HandshakeCompleted))
            and b.session.stats["frames_received"] > 2
        ),
        max_time=max_time,
    )
    assert a.session.state is SessionState.ESTABLISHED


def workload(seed: int, n: int, *, big: bool = True) -> list[tuple[MessageClass, bytes]]:
    rng = random.Random(seed)
    out: list[tuple[MessageClass, bytes]] = []
    for i in range(n):
        cls = MessageClass(rng.randrange(5))
        r = rng.random()
        if big and r < 0.03:
            size = rng.randrange(16_000, 60_000)
        elif r < 0.1:
            size = rng.randrange(0, 3)
        else:
            size = rng.randrange(8, 600)
        tag = f"{cls.name}:{i}:".encode()
        out.append((cls, (tag * (size // len(tag) + 1))[:size] if size >= len(tag) else tag[:size]))
    return out


def send_all(net: SimNet, name: str, msgs: list[tuple[MessageClass, bytes]], sent: Sent) -> None:
    for cls, data in msgs:
        mid = net.call(name, lambda s, c=cls, d=data: s.send(c, d, net.now))
        assert isinstance(mid, int)
        sent[mid] = (cls, data)


def check_delivery(sent: Sent, received: list[Event], acked: list[Event] | None) -> None:
    """Every sent message delivered exactly once, in order per class, with its id; all acked."""
    got = [e for e in received if isinstance(e, MessageReceived)]
    ids = [e.message_id for e in got]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert sorted(ids) == sorted(sent), (
        f"missing {len(set(sent) - set(ids))}, unexpected {len(set(ids) - set(sent))}"
    )
    for e in got:
        assert sent[e.message_id] == (e.cls, e.data)
    for cls in MessageClass:
        per = [e.message_id for e in got if e.cls is cls]
        assert per == sorted(per), f"{cls.name} out of order"
        seqs = [e.seq for e in got if e.cls is cls]
        assert seqs == sorted(seqs)
    if acked is not None:
        acked_ids = [e.message_id for e in acked if isinstance(e, MessageAcked)]
        assert len(acked_ids) == len(set(acked_ids)), "a message was acked twice"
        assert sorted(acked_ids) == sorted(sent)


def all_idle(*sessions: Session) -> bool:
    return all(s.idle for s in sessions)
