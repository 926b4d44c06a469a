"""The session's parts on their own: each is given what it needs and returns what happened."""

from __future__ import annotations

import os

import pytest

from p2pmed.core.binding import DirectBinding, Verdict
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.errors import (
    CryptoError,
    FrameError,
    LocalProtocolError,
    RemoteProtocolError,
    StateError,
)
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass, decode
from p2pmed.core.heartbeat import Heartbeat
from p2pmed.core.protection import FIRST_PN, FrameProtection
from p2pmed.core.receiver import Receiver
from p2pmed.core.recovery import Recovery
from p2pmed.core.reliability import decode_ack
from p2pmed.core.stats import SessionStats, StatsView
from p2pmed.core.streams import Streams

T0 = 1e9  # a machine that has been up for a long time; 0.0 is covered by the session tests


def _protection_pair() -> tuple[FrameProtection, FrameProtection]:
    c1, c2 = os.urandom(32), os.urandom(32)
    a, b = FrameProtection(pn_block=8), FrameProtection(pn_block=8)
    a.install(SendKeys(c1, now=T0), RecvKeys(c2))
    b.install(SendKeys(c2, now=T0), RecvKeys(c1))
    return a, b


def _ping(p: FrameProtection) -> bytes:
    pn = p.take_pn()
    header = Header(FrameType.PING, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, 0, 0)
    return p.seal(header, pn.to_bytes(8, "big"))


def test_protection_opens_once_per_path_and_refuses_replays() -> None:
    a, b = _protection_pair()
    wire = _ping(a)
    header, _ = decode(wire)
    assert b.open(header, wire, "direct", T0) == FIRST_PN.to_bytes(8, "big")
    assert b.open(header, wire, "relay", T0) is None  # the copy sent on the other path
    with pytest.raises(CryptoError) as e:
        b.open(header, wire, "direct", T0)
    assert e.value.reason == "replay"
    assert b.take_replay_high() == FIRST_PN
    assert b.take_replay_high() is None  # reported once


def test_protection_reserves_pn_blocks_and_reports_each_once() -> None:
    a, _ = _protection_pair()
    assert a.take_pn() == FIRST_PN
    assert a.take_reserved() == FIRST_PN + 8
    assert a.take_reserved() is None
    pns = [a.take_pn() for _ in range(7)]
    assert pns == list(range(FIRST_PN + 1, FIRST_PN + 8)) and a.take_reserved() is None
    a.take_pn()
    assert a.take_reserved() == FIRST_PN + 16


def test_protection_restored_refuses_what_it_accepted_before() -> None:
    a, b = _protection_pair()
    wires = [_ping(a) for _ in range(3)]
    for w in wires:
        b.open(decode(w)[0], w, "direct", T0)
    again = FrameProtection(pn_block=8)
    again.restore(*b.export())
    with pytest.raises(CryptoError):
        again.open(decode(wires[1])[0], wires[1], "direct", T0)
    assert again.next_pn == again.pn_ceiling >= FIRST_PN


def _streams_with_sent(n: int, now: float) -> tuple[Streams, Recovery]:
    streams = Streams(max_message=1 << 20)
    rec = Recovery(initial_rto=1.0, min_rto=0.2, max_rto=4.0)
    for i in range(n):
        streams.queue(int(MessageClass.MEDIUM), bytes([i]) * 2000, 0)
    for pn in range(FIRST_PN, FIRST_PN + n):
        item = streams.next_new(int(MessageClass.MEDIUM), 128, 1 << 20, 2000)
        assert item is not None
        f, _ = item
        f.pn, f.sent_at, f.sends, f.paths = pn, now, 1, ("direct",)
        streams.tx[f.cls].mark_sent(f)
        rec.on_sent(pn, now)
    return streams, rec


def test_recovery_returns_acked_frames_and_queues_lost_ones() -> None:
    streams, rec = _streams_with_sent(6, T0)
    c = int(MessageClass.MEDIUM)
    # frames 0 and 1 delivered, 2 missing, 3..5 sacked: 2 is lost (three later frames arrived)
    acked, lost = rec.on_ack(streams, FIRST_PN + 5, 0, [(c, 2, [(3, 6)])], T0 + 0.05)
    assert [(cls, [f.seq for f in done]) for cls, done in acked] == [(c, [0, 1])]
    assert lost == 1 and [f.seq for f in streams.retx[c]] == [2]
    assert rec.rtt.srtt == pytest.approx(0.05)
    assert streams.next_resend(c, 128, 1 << 20) is not None


def test_recovery_reroutes_only_frames_on_dead_paths() -> None:
    streams, rec = _streams_with_sent(3, T0)
    c = int(MessageClass.MEDIUM)
    streams.tx[c].unacked[0].paths = ("direct", "relay")
    assert rec.reroute(streams, {"relay"}) == 2  # seq 1 and 2 were only on "direct"
    assert [f.seq for f in streams.retx[c]] == [1, 2]
    assert rec.reroute(streams, set()) == 1  # the others are queued already


def test_recovery_timer_fires_once_due() -> None:
    streams, rec = _streams_with_sent(2, T0)
    assert rec.rto_deadline == pytest.approx(T0 + 1.0)
    assert not rec.on_timer(streams, T0 + 0.5)
    assert rec.on_timer(streams, T0 + 1.0)
    assert len(streams.retx[int(MessageClass.MEDIUM)]) == 2


def test_heartbeat_reports_paths_and_pongs_without_a_session() -> None:
    hb = Heartbeat(interval=0.25, dead_after=1.0)
    assert hb.add("relay", T0, False) is True
    assert hb.add("relay", T0, False) is False
    assert hb.direct_again("direct") is False and hb.direct_again("direct2") is True
    hb.queue_ping("relay", T0)
    ((path, payload),) = hb.take_outgoing()
    assert path == "relay" and hb.take_outgoing() == []
    pong = hb.on_pong(payload, "relay", T0 + 0.1)
    assert pong is not None and pong.rtt == pytest.approx(0.1) and not pong.came_alive
    assert hb.on_pong(payload, "relay", T0 + 0.2) is None  # answered already
    with pytest.raises(FrameError):
        hb.on_pong(b"short", "relay", T0)
    assert hb.expire(T0 + 0.5) == []
    assert hb.expire(T0 + 1.2) == ["relay"] and not hb.is_alive("relay")
    assert hb.remove("relay") is False  # already down


def test_receiver_owns_the_ack_it_owes() -> None:
    streams = Streams(max_message=1 << 20)
    rcv = Receiver(ack_every=4, ack_delay=0.005)
    rx = streams.rx[int(MessageClass.LOW)]

    def data(seq: int, pn: int) -> Header:
        return Header(
            FrameType.DATA, Flags.FIRST | Flags.LAST, MessageClass.LOW, 1, pn, seq, 0, 7, 0
        )

    assert rcv.on_data(rx, data(1, 10), b"b", "direct", T0) == []  # a gap: held back
    assert rcv.ack_due  # gaps are reported at once
    ready = rcv.on_data(rx, data(0, 11), b"a", "direct", T0)
    assert ready is not None and [seq for seq, *_ in ready] == [0, 1]
    delivery = rcv.deliver(rx, ready, "direct")
    assert [e.data for e in delivery.events] == [b"a", b"b"] and not delivery.malformed
    assert rcv.on_data(rx, data(0, 12), b"a", "direct", T0) is None  # duplicate
    largest, _, entries = decode_ack(rcv.build_ack(streams.ack_entries(), T0))
    assert largest == 12 and entries == [(int(MessageClass.LOW), 2, [])]
    rcv.ack_sent()
    assert not rcv.ack_due and rcv.deadline is None
    with pytest.raises(StateError):
        rcv.on_data(rx, data(10**6, 13), b"x", "direct", T0)


def test_binding_verdicts() -> None:
    b = DirectBinding()
    mine, theirs, other = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32

    def bind(peer: bytes, me: bytes) -> bytes:
        return b"\x06direct" + peer + me

    assert b.on_bind(bind(theirs, mine)) is Verdict.STALE  # nothing negotiated yet
    b.expect(mine)
    assert b.on_bind(bind(theirs, mine)) is Verdict.HELD
    assert b.connected(mine, theirs) == (theirs, mine)
    assert b.check(theirs, mine) is Verdict.BOUND and b.bound == (mine, theirs)
    assert b.on_bind(bind(other, mine)) is Verdict.ATTACK
    with pytest.raises(FrameError):
        b.on_bind(b"\x06direct")
    with pytest.raises(ValueError):
        b.expect(b"short")


def test_stats_view_is_a_read_only_mapping_of_the_typed_counters() -> None:
    stats = SessionStats()
    view = StatsView(stats)
    stats.acks_sent += 2
    stats.reject("crc", "frame")
    stats.reject("state", "state")
    assert view["acks_sent"] == 2 and view["rejected_frame_crc"] == 1
    assert view["rejected_total"] == 2 and view["rejected_state"] == 1
    assert view.get("rejected_crypto_auth", 0) == 0 and "rejected_crypto_auth" not in view
    assert dict(view)["acks_sent"] == 2 and len(view) == len(dict(view))
    with pytest.raises(TypeError):
        view["acks_sent"] = 3  # type: ignore[index]


def test_local_and_remote_errors_are_apart() -> None:
    assert issubclass(StateError, RemoteProtocolError)
    assert issubclass(CryptoError, RemoteProtocolError) and issubclass(
        FrameError, RemoteProtocolError
    )
    assert not issubclass(LocalProtocolError, RemoteProtocolError)


def test_handshake_state_is_an_enum() -> None:
    from p2pmed.core.handshake import Handshake, HandshakeState
    from p2pmed.core.identity import Identity

    hs = Handshake(Identity.generate(), initiator=False, session_id="s")
    assert hs.state is HandshakeState.WAIT_COMMIT
    assert hs.expected() is FrameType.HS_COMMIT
