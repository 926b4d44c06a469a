"""Process restarts in the simulated network: a Session rebuilt from its store resumes.

Nothing lost, nothing delivered twice, no (pn) nonce reused with different bytes.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from p2pmed.core import frame
from p2pmed.core.events import MessageAcked, MessageReceived
from p2pmed.core.frame import MessageClass
from p2pmed.core.persist import SessionSnapshot
from p2pmed.core.session import Session, SessionState
from p2pmed.store.sqlite import SessionStore
from tests.core.sessionkit import Sent, all_idle, check_delivery, establish, send_all, workload
from tests.core.simnet import PathCfg, SimNet, make_pair


def restart(net: SimNet, name: str, store: SessionSnapshot | SessionStore) -> Session:
    """Kill the endpoint's Session and build a new one from what its store holds."""
    ep = net.ends[name]
    old = ep.session
    snap = store.load() if isinstance(store, SessionStore) else copy.deepcopy(store)
    assert snap is not None
    new = Session(old.config, now=net.now, restored=snap)
    ep.session = new
    for pid in old.paths:
        new.add_path(pid, net.now)
    net.flush(name)
    return new


def assert_no_nonce_reuse(net: SimNet) -> None:
    for src in ("a", "b"):
        seen: dict[tuple[int, int], bytes] = {}
        for _, s, _, f in net.wire_log:
            if s != src:
                continue
            h, _ = frame.decode(f)
            if h.epoch == 0:
                continue
            key = (h.epoch, h.pn)
            assert seen.setdefault(key, f) == f, f"{src} reused pn {h.pn} in epoch {h.epoch}"


def lossy() -> dict[str, PathCfg]:
    return {
        "direct": PathCfg(latency=0.01, jitter=0.01, loss=0.1, dup=0.05, corrupt=0.02),
        "relay": PathCfg(latency=0.03, jitter=0.02, loss=0.1, dup=0.05),
    }


def _stores(kind: str, tmp_path: Path) -> tuple[SessionSnapshot | SessionStore, ...]:
    if kind == "memory":
        return SessionSnapshot(), SessionSnapshot()
    return (
        SessionStore(tmp_path / "a.db", key="sess-1/a", synchronous="NORMAL"),
        SessionStore(tmp_path / "b.db", key="sess-1/b", synchronous="NORMAL"),
    )


@pytest.mark.parametrize(("seed", "kind"), [(1, "memory"), (2, "memory"), (3, "sqlite")])
def test_both_sides_restart_repeatedly_mid_stream(seed: int, kind: str, tmp_path: Path) -> None:
    sa, sb = _stores(kind, tmp_path)
    net, a, b = make_pair(seed, paths=lossy(), stores=(sa, sb), persist=True, pn_block=64)
    net.log_wire = True
    establish(net, max_time=60)
    rng = random.Random(seed)
    sent_a: Sent = {}
    sent_b: Sent = {}
    msgs_a = workload(seed, 240)
    msgs_b = workload(seed + 1, 120)
    for round_ in range(6):
        send_all(net, "a", msgs_a[round_ * 40 : (round_ + 1) * 40], sent_a)
        send_all(net, "b", msgs_b[round_ * 20 : (round_ + 1) * 20], sent_b)
        net.run_for(rng.uniform(0.005, 0.08))
        victim = rng.choice(["a", "b", "both"])
        if victim in ("a", "both"):
            restart(net, "a", sa)
        if victim in ("b", "both"):
            restart(net, "b", sb)
    a, b = net.ends["a"].session, net.ends["b"].session
    net.run(lambda: all_idle(a, b), max_time=600)
    check_delivery(sent_a, net.ends["b"].events, net.ends["a"].events)
    check_delivery(sent_b, net.ends["a"].events, net.ends["b"].events)
    assert_no_nonce_reuse(net)
    for s in (a, b):
        assert s.stats.get("rejected_frame_internal", 0) == 0
    if isinstance(sb, SessionStore):
        inbox = sb.inbox()
        assert sorted(m.msg_id for m in inbox) == sorted(sent_a)
        assert len({m.msg_id for m in inbox}) == len(inbox)


def test_restart_while_a_large_message_is_half_reassembled() -> None:
    sa, sb = SessionSnapshot(), SessionSnapshot()
    paths = {"direct": PathCfg(latency=0.02)}
    net, a, b = make_pair(5, paths=paths, stores=(sa, sb), persist=True)
    establish(net)
    sent: Sent = {}
    big = bytes(random.Random(5).randbytes(600_000))
    send_all(net, "a", [(MessageClass.LOW, big), (MessageClass.LOW, b"after")], sent)
    net.run_for(0.07)
    b = net.ends["b"].session
    assert b._streams.rx[MessageClass.LOW].partial is not None  # mid-reassembly
    b = restart(net, "b", sb)
    net.run_for(0.03)
    a = restart(net, "a", sa)
    net.run(lambda: all_idle(a), max_time=120)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)


def test_restored_session_resumes_above_the_reserved_pn() -> None:
    sa, sb = SessionSnapshot(), SessionSnapshot()
    net, a, _b = make_pair(6, stores=(sa, sb), persist=True, pn_block=32)
    net.log_wire = True
    establish(net)
    send_all(net, "a", workload(6, 20, big=False), {})
    net.run(lambda: all_idle(a))
    used = max(frame.decode(f)[0].pn for _, s, _, f in net.wire_log if s == "a")
    assert sa.pn_ceiling > used
    a2 = restart(net, "a", sa)
    send_all(net, "a", [(MessageClass.HIGH, b"after restart")], {})
    first = min(frame.decode(f)[0].pn for t, s, _, f in net.wire_log if s == "a" and t >= net.now)
    assert first >= sa.pn_ceiling - 32 > used  # a new block, above everything reserved before
    net.run(lambda: all_idle(a2))
    assert a2.state is SessionState.ESTABLISHED


def test_sqlite_store_matches_the_reference_snapshot(tmp_path: Path) -> None:
    ref = SessionSnapshot()
    db = SessionStore(tmp_path / "x.db", key="k", synchronous="NORMAL")

    class Both:
        def apply(self, changes: list[object]) -> None:
            ref.apply(changes)  # type: ignore[arg-type]
            db.apply(changes)  # type: ignore[arg-type]

    net, a, _b = make_pair(8, paths=lossy(), stores=(Both(), None), persist=True)
    establish(net, max_time=60)
    send_all(net, "b", workload(9, 50), {})
    net.run_for(0.05)
    send_all(net, "a", workload(8, 200), {})
    net.run_for(0.005)
    loaded = db.load()
    assert loaded is not None
    assert loaded == ref
    assert loaded.frames and loaded.messages  # mid-stream: there is an outbox to compare
    live = a.snapshot()
    for name in (
        "frames",
        "messages",
        "send_next_seq",
        "send_next_index",
        "recv_next_seq",
        "recv_delivered",
        "replay_high",
        "pn_ceiling",
        "sas",
    ):
        assert getattr(loaded, name) == getattr(live, name), name


def test_store_survives_reopen_and_marks_inbox(tmp_path: Path) -> None:
    sb = SessionStore(tmp_path / "b.db", key="b")
    net, a, b = make_pair(10, stores=(None, sb), persist=True)
    establish(net)
    sent: Sent = {}
    send_all(net, "a", workload(10, 30, big=False), sent)
    net.run(lambda: all_idle(a))
    sb.close()
    again = SessionStore(tmp_path / "b.db", key="b")
    rows = again.inbox()
    assert [r.msg_id for r in rows] == [
        e.message_id for e in net.ends["b"].events if isinstance(e, MessageReceived)
    ]
    again.inbox_done(rows[9].row)
    assert len(again.inbox()) == len(rows) - 10
    assert len(again.inbox(include_done=True)) == len(rows)
    assert SessionStore(tmp_path / "b.db", key="other").load() is None
    snap = again.load()
    assert snap is not None and snap.recv_delivered == b.snapshot().recv_delivered
    assert [e for e in net.ends["a"].events if isinstance(e, MessageAcked)]


def test_restart_after_rekeys_keeps_both_directions_working() -> None:
    sa, sb = SessionSnapshot(), SessionSnapshot()
    net, a, b = make_pair(
        12, paths=lossy(), stores=(sa, sb), persist=True, rekey_frames=40, pn_block=128
    )
    net.log_wire = True
    establish(net, max_time=60)
    sent_a: Sent = {}
    sent_b: Sent = {}
    for i in range(5):
        send_all(net, "a", workload(100 + i, 60, big=False), sent_a)
        send_all(net, "b", workload(200 + i, 30, big=False), sent_b)
        net.run_for(0.6)
        restart(net, "ab"[i % 2], sa if i % 2 == 0 else sb)
    a, b = net.ends["a"].session, net.ends["b"].session
    net.run(lambda: all_idle(a, b), max_time=300)
    check_delivery(sent_a, net.ends["b"].events, net.ends["a"].events)
    check_delivery(sent_b, net.ends["a"].events, net.ends["b"].events)
    assert_no_nonce_reuse(net)
    epochs = {frame.decode(f)[0].epoch for _, s, _, f in net.wire_log if s == "a"}
    assert max(epochs) >= 3  # it really ratcheted, across restarts
