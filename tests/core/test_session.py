"""Two Sessions through the simulated network: handshake, delivery, loss, paths, priorities."""

from __future__ import annotations

import pytest

from p2pmed.core import frame
from p2pmed.core.errors import StateError
from p2pmed.core.events import (
    FrameRejected,
    HandshakeCompleted,
    MessageAcked,
    MessageReceived,
    PathDown,
    PathQuality,
    PathUp,
    SessionClosed,
)
from p2pmed.core.frame import FrameType, MessageClass
from p2pmed.core.session import Session, SessionConfig, SessionState
from tests.core.sessionkit import Sent, all_idle, check_delivery, establish, of, send_all, workload
from tests.core.simnet import PathCfg, make_identity, make_pair


def two_paths() -> dict[str, PathCfg]:
    return {"direct": PathCfg(latency=0.005), "relay": PathCfg(latency=0.02)}


def test_handshake_completes_with_matching_sas() -> None:
    net, a, b = make_pair(1, paths=two_paths())
    establish(net)
    ha = of(net.ends["a"].events, HandshakeCompleted)
    hb = of(net.ends["b"].events, HandshakeCompleted)
    assert len(ha) == len(hb) == 1
    assert ha[0].sas == hb[0].sas  # type: ignore[attr-defined]
    assert ha[0].peer_fingerprint == make_identity(2).fingerprint()  # type: ignore[attr-defined]
    assert hb[0].peer_fingerprint == make_identity(1).fingerprint()  # type: ignore[attr-defined]
    assert b.state is SessionState.ESTABLISHED
    assert a.stats["rejected_total"] == b.stats["rejected_total"] == 0


def test_handshake_survives_loss() -> None:
    paths = {"direct": PathCfg(loss=0.5, latency=0.01)}
    net, a, b = make_pair(7, paths=paths)
    establish(net, max_time=60)
    assert a.stats["handshake_retransmits"] + b.stats["handshake_retransmits"] > 0
    assert a.sas == b.sas


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_network_exactly_once_both_directions(seed: int) -> None:
    net, a, b = make_pair(seed, paths=two_paths())
    establish(net)
    sent_a: Sent = {}
    sent_b: Sent = {}
    send_all(net, "a", workload(seed, 400), sent_a)
    send_all(net, "b", workload(seed + 100, 300), sent_b)
    net.run(lambda: all_idle(a, b))
    check_delivery(sent_a, net.ends["b"].events, net.ends["a"].events)
    check_delivery(sent_b, net.ends["a"].events, net.ends["b"].events)
    assert a.stats["retransmits"] == 0
    assert a.stats["rejected_total"] == b.stats["rejected_total"] == 0


@pytest.mark.parametrize("chunk", [frame.DEFAULT_CHUNK, 32_416, frame.MAX_CHUNK])
def test_sizes_at_chunk_boundaries(chunk: int) -> None:
    net, a, _b = make_pair(4, chunk_bytes=chunk, window_bytes=256 * 1024)
    establish(net)
    near = [chunk - 5, chunk - 4, chunk - 3, chunk, chunk + 1, 2 * chunk, 2 * chunk + 1]
    sizes = [0, 1, *near, 200_000]
    msgs = [(MessageClass.MEDIUM, bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    sent: Sent = {}
    send_all(net, "a", msgs, sent)
    net.run(lambda: all_idle(a))
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)


@pytest.mark.parametrize("chunk", [0, 1023, frame.MAX_CHUNK + 1])
def test_chunk_size_outside_the_protocol_is_refused(chunk: int) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        make_pair(1, chunk_bytes=chunk)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_lossy_network_exactly_once(seed: int) -> None:
    bad = PathCfg(latency=0.01, jitter=0.02, loss=0.15, dup=0.1, corrupt=0.05)
    worse = PathCfg(latency=0.03, jitter=0.03, loss=0.25, dup=0.1, corrupt=0.05)
    net, a, b = make_pair(seed, paths={"direct": bad, "relay": worse})
    establish(net, max_time=60)
    sent_a: Sent = {}
    sent_b: Sent = {}
    send_all(net, "a", workload(seed, 300), sent_a)
    send_all(net, "b", workload(seed + 7, 100), sent_b)
    net.run(lambda: all_idle(a, b), max_time=300)
    check_delivery(sent_a, net.ends["b"].events, net.ends["a"].events)
    check_delivery(sent_b, net.ends["a"].events, net.ends["b"].events)
    assert a.stats["retransmits"] > 0
    assert b.stats["rejected_frame_crc"] > 0  # bit flips are caught by the CRC
    assert b.stats["duplicates"] + b.stats["duplicate_frames"] > 0
    for s in (a, b):
        assert s.stats.get("rejected_frame_internal", 0) == 0
        assert s.stats.get("rejected_crypto_auth", 0) == 0  # a flip never gets past the CRC


def test_path_death_moves_unacked_frames_to_live_path() -> None:
    net, a, _b = make_pair(21, paths=two_paths())
    a.add_path("direct", net.now, preferred=True)
    establish(net)
    sent: Sent = {}
    send_all(net, "a", workload(21, 200, big=False), sent)
    net.run_for(0.004)  # frames are in flight on "direct"
    net.paths["direct"].up = False
    net.run(lambda: all_idle(a), max_time=30)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    assert PathDown("direct") in net.ends["a"].events
    assert PathDown("direct") in net.ends["b"].events
    assert a.stats["failover_resends"] > 0
    assert not a.path_status("direct").alive
    assert a.path_status("relay").alive
    # the path comes back: heartbeats revive it
    net.paths["direct"].up = True
    net.run(lambda: a.path_status("direct").alive, max_time=5)
    assert net.ends["a"].events.count(PathUp("direct")) == 2


def test_remove_path_resends_at_once() -> None:
    net, a, _b = make_pair(22, paths=two_paths())
    a.add_path("direct", net.now, preferred=True)
    establish(net)
    sent: Sent = {}
    net.paths["direct"].loss = 1.0  # everything sent on it from now on is lost
    send_all(net, "a", workload(22, 50, big=False), sent)
    before = a.stats["failover_resends"]
    net.call("a", lambda s: s.remove_path("direct", net.now))
    assert a.stats["failover_resends"] > before
    t0 = net.now
    net.run(lambda: all_idle(a), max_time=10)
    assert net.now - t0 < 0.2  # well before the 1 s initial RTO: no timeout was needed
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    assert a.stats["rto_timeouts"] == 0


def test_critical_goes_on_every_path_and_copies_count_as_duplicates() -> None:
    net, a, b = make_pair(23, paths=two_paths())
    establish(net)
    net.log_wire = True
    sent: Sent = {}
    send_all(net, "a", [(MessageClass.CRITICAL, b"ALARM asystole")], sent)
    send_all(net, "a", [(MessageClass.MEDIUM, b"numerics")], sent)
    net.run(lambda: all_idle(a))
    net.run_for(0.05)  # the slower copy arrives too
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    data = [
        (path, f)
        for _, src, path, f in net.wire_log
        if src == "a" and frame.decode(f)[0].type is FrameType.DATA
    ]
    crit = [(p, f) for p, f in data if frame.decode(f)[0].cls is MessageClass.CRITICAL]
    med = [(p, f) for p, f in data if frame.decode(f)[0].cls is MessageClass.MEDIUM]
    assert sorted(p for p, _ in crit) == ["direct", "relay"]
    assert crit[0][1] == crit[1][1]  # byte-identical copies, same pn
    assert len(med) == 1
    assert b.stats["duplicate_frames"] >= 1
    assert b.stats.get("rejected_crypto_replay", 0) == 0


def test_critical_waits_behind_at_most_one_chunk() -> None:
    net, a, _b = make_pair(24, paths={"direct": PathCfg(latency=0.02)})
    establish(net)
    sent: Sent = {}
    send_all(net, "a", [(MessageClass.BACKGROUND, bytes(600 * 1024))], sent)
    send_all(net, "a", [(MessageClass.MEDIUM, bytes(200 * 1024))], sent)
    send_all(net, "a", [(MessageClass.LOW, bytes(300 * 1024))], sent)
    assert a.queued_bytes + a.inflight[1] >= 1024 * 1024
    net.run_for(0.05)  # the pipeline is busy with big chunks
    assert a.queued_bytes > 500_000
    # a transport that takes one frame at a time: the alarm is the very next DATA frame
    crit = a.send(MessageClass.CRITICAL, b"VF alarm", net.now)
    out = a.datagrams_to_send(net.now, max_datagrams=1)
    data = [frame.decode(f)[0] for _, f in out if frame.decode(f)[0].type is FrameType.DATA]
    assert [h.cls for h in data] == [MessageClass.CRITICAL]
    for path_id, f in out:
        net.ends["b"].session.receive(f, path_id, net.now)
    net.flush("b")
    sent[crit] = (MessageClass.CRITICAL, b"VF alarm")
    net.run(lambda: all_idle(a), max_time=60)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    got = [e for e in net.ends["b"].events if isinstance(e, MessageReceived)]
    assert got[0].cls is MessageClass.CRITICAL  # ahead of every big message


def test_critical_is_never_blocked_by_a_full_window() -> None:
    net, a, _b = make_pair(25, paths={"direct": PathCfg(latency=0.05)})
    establish(net)
    send_all(net, "a", [(MessageClass.BACKGROUND, bytes(2 * 1024 * 1024))], {})
    assert a.inflight[1] >= a.config.window_bytes * 7 // 8 - a.config.chunk_bytes
    a.send(MessageClass.CRITICAL, b"alarm", net.now)
    out = a.datagrams_to_send(net.now)
    assert any(frame.decode(f)[0].cls is MessageClass.CRITICAL for _, f in out)


@pytest.mark.parametrize("seed", [31, 32])
def test_window_is_never_exceeded(seed: int) -> None:
    paths = {"direct": PathCfg(latency=0.01, jitter=0.01, loss=0.1)}
    net, a, _b = make_pair(seed, paths=paths, window_frames=16, window_bytes=48 * 1024)
    establish(net)
    peak = [0, 0]

    def watch(name: str, s: Session) -> None:
        frames, nbytes = s.inflight
        assert frames <= s.config.window_frames
        assert nbytes <= s.config.window_bytes
        peak[0], peak[1] = max(peak[0], frames), max(peak[1], nbytes)

    net.on_sent = watch
    sent: Sent = {}
    send_all(net, "a", workload(seed, 600), sent)
    net.run(lambda: all_idle(a), max_time=300)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    assert peak[0] >= 8 or peak[1] >= 24 * 1024  # the window was actually used


def test_small_messages_are_coalesced() -> None:
    net, a, _b = make_pair(26)
    establish(net)
    sent: Sent = {}
    send_all(net, "a", [(MessageClass.MEDIUM, b"x" * 32)] * 5, sent)  # one frame each
    before = a.stats["data_frames_sent"]
    for _ in range(1000):  # queued without flushing: one batch per 16 KiB
        mid = a.send(MessageClass.MEDIUM, b"y" * 32, net.now)
        sent[mid] = (MessageClass.MEDIUM, b"y" * 32)
    net.flush("a")
    assert a.stats["data_frames_sent"] - before == 3  # 1000 * 36 B in 16 KiB batches
    net.run(lambda: all_idle(a))
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)


def test_acks_are_coalesced_but_prompt_for_critical() -> None:
    net, _a, b = make_pair(27)
    establish(net)
    acks0 = b.stats["acks_sent"]
    send_all(net, "a", [(MessageClass.LOW, b"x")], {})
    net.run_for(0.0101)  # arrives at +10 ms; ack is held up to ack_delay
    assert b.stats["acks_sent"] == acks0
    net.run_for(0.006)
    assert b.stats["acks_sent"] == acks0 + 1
    send_all(net, "a", [(MessageClass.CRITICAL, b"x")], {})
    net.run_for(0.0101)
    assert b.stats["acks_sent"] == acks0 + 2  # immediately


def test_message_acked_is_end_to_end() -> None:
    net, a, _b = make_pair(28)
    establish(net)
    mid = a.send(MessageClass.HIGH, b"bp 120/80", net.now)
    net.flush("a")
    assert not of(net.ends["a"].events, MessageAcked)
    net.run(lambda: bool(of(net.ends["a"].events, MessageAcked)))
    assert MessageAcked(mid, MessageClass.HIGH) in net.ends["a"].events
    got = of(net.ends["b"].events, MessageReceived)
    assert got[0].message_id == mid  # type: ignore[attr-defined]


def test_heartbeats_report_quality_and_detect_death() -> None:
    net, a, _b = make_pair(29, paths={"direct": PathCfg(latency=0.01), "relay": PathCfg(0.04)})
    establish(net)
    net.run_for(1.0)
    q = [e for e in of(net.ends["a"].events, PathQuality) if e.path_id == "relay"]  # type: ignore[attr-defined]
    assert q and abs(q[-1].rtt - 0.08) < 0.01  # type: ignore[attr-defined]
    assert a.path_status("direct").rtt == pytest.approx(0.02, abs=0.005)
    net.paths["relay"].up = False
    t0 = net.now
    net.run(lambda: PathDown("relay") in net.ends["a"].events, max_time=5)
    assert net.now - t0 <= a.config.path_dead_after + a.config.heartbeat_interval + 0.05
    net.run_for(1.0)
    assert a.path_status("relay").loss > 0.2


def test_a_slow_path_is_congested_not_dead() -> None:
    """A backlog on a narrow uplink stretches RTTs past path_dead_after; PONGs still come,
    so the path must stay up. Once they stop, it dies within 3 smoothed RTTs."""
    net, a, _b = make_pair(31, paths={"direct": PathCfg(latency=0.01), "relay": PathCfg(0.04)})
    establish(net)
    net.run_for(1.0)
    for latency in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):  # RTT up to 1.2 s > path_dead_after
        net.paths["direct"].latency = latency
        net.run_for(3.0)
    net.run_for(6.0)
    assert PathDown("direct") not in net.ends["a"].events
    srtt = a.path_status("direct").rtt
    assert srtt is not None and srtt > a.config.path_dead_after
    net.paths["direct"].up = False
    t0 = net.now
    net.run(lambda: PathDown("direct") in net.ends["a"].events, max_time=10)
    assert a.config.path_dead_after < net.now - t0 <= 3 * srtt + 2 * a.config.heartbeat_interval
    assert net.now - t0 <= 3 * a.config.path_dead_after + 2 * a.config.heartbeat_interval


def test_rekey_on_direct_reconnect() -> None:
    net, a, b = make_pair(30, paths=two_paths())
    establish(net)
    sent: Sent = {}
    send_all(net, "a", workload(30, 50, big=False), sent)
    epoch = a._prot.send.epoch  # type: ignore[union-attr]
    net.call("a", lambda s: s.add_path("direct", net.now))  # a new direct connection
    assert a.state is SessionState.REKEYING
    assert a._prot.send.epoch == epoch + 1  # type: ignore[union-attr]
    send_all(net, "a", workload(31, 50, big=False), sent)
    net.run(lambda: all_idle(a) and a.state is SessionState.ESTABLISHED)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    assert b._prot.recv.epoch == epoch + 1  # type: ignore[union-attr]
    assert a.stats["ratchets"] == 1


def test_periodic_rekey() -> None:
    net, a, b = make_pair(32, rekey_interval=0.5)
    establish(net)
    sent: Sent = {}
    for _ in range(6):
        send_all(net, "a", workload(32, 20, big=False), sent)
        net.run_for(0.3)
    net.run(lambda: all_idle(a))
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
    assert a.stats["ratchets"] >= 2
    assert b.stats["rejected_total"] == 0


def test_close_handshake() -> None:
    net, a, b = make_pair(33)
    establish(net)
    net.call("a", lambda s: s.close(net.now, 7, "visit ended"))
    assert a.state is SessionState.CLOSING
    with pytest.raises(StateError):
        a.send(MessageClass.LOW, b"late", net.now)
    net.run(lambda: a.state is SessionState.CLOSED and b.state is SessionState.CLOSED)
    assert SessionClosed(7, "visit ended") in net.ends["b"].events
    assert SessionClosed(7, "visit ended") in net.ends["a"].events
    assert a.get_timer() is None


def test_close_is_repeated_when_lost() -> None:
    net, _a, b = make_pair(39)
    establish(net)
    net.paths["direct"].loss = 1.0
    net.call("a", lambda s: s.close(net.now, 3, "done"))
    net.run_for(0.3)
    net.paths["direct"].loss = 0.0
    net.run(lambda: b.state is SessionState.CLOSED, max_time=1)
    assert SessionClosed(3, "done") in net.ends["b"].events


def test_close_times_out_without_peer() -> None:
    net, a, _b = make_pair(34)
    establish(net)
    net.paths["direct"].up = False
    net.call("a", lambda s: s.close(net.now, 1, "bye"))
    net.run(lambda: a.state is SessionState.CLOSED, max_time=3)
    assert SessionClosed(1, "bye") in net.ends["a"].events


def test_messages_sent_before_handshake_are_delivered() -> None:
    net, a, b = make_pair(35)
    sent: Sent = {}
    send_all(net, "a", workload(35, 30, big=False), sent)
    send_all(net, "b", [(MessageClass.HIGH, b"from responder")], {})
    net.run(lambda: all_idle(a, b))
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)


def test_rejects_are_counted_and_reported() -> None:
    net, a, b = make_pair(36)
    establish(net)
    net.log_wire = True
    send_all(net, "a", [(MessageClass.HIGH, b"hello")], {})
    net.run(lambda: all_idle(a))
    wire = [(p, f) for _, src, p, f in net.wire_log if src == "a"]
    path, data_frame = next((p, f) for p, f in wire if frame.decode(f)[0].type is FrameType.DATA)
    assert path == "direct"
    ev = net.ends["b"].events
    ev.clear()
    # the same bytes on another path: the copy a sender puts on each path, counted, harmless
    dups = b.stats["duplicate_frames"]
    b.receive(data_frame, "relay", net.now)
    assert b.stats["duplicate_frames"] == dups + 1 and b.stats["rejected_total"] == 0
    # again on a path that already delivered them: a replay, rejected and reported
    b.receive(data_frame, "direct", net.now)
    assert b.stats["rejected_crypto_replay"] == 1
    # CRC error
    bad = bytearray(data_frame)
    bad[50] ^= 1
    b.receive(bytes(bad), "direct", net.now)
    assert b.stats["rejected_frame_crc"] == 1
    # header change with a fixed-up CRC: AEAD refuses it
    forged = bytearray(data_frame)
    forged[16 + 7] ^= 1  # seq
    body = bytes(forged[:-4])
    forged_frame = body + frame.crc32(body).to_bytes(4, "big")
    b.receive(forged_frame, "direct", net.now)
    # pn moved far back: refused by the replay window before decryption
    old = bytearray(data_frame)
    old[8:16] = (0).to_bytes(8, "big")
    body = bytes(old[:-4])
    b.receive(body + frame.crc32(body).to_bytes(4, "big"), "direct", net.now)
    # a handshake frame in ESTABLISHED
    hs = frame.encode(
        frame.Header(
            FrameType.HS_COMMIT, frame.Flags.NONE, MessageClass.CRITICAL, 0, 0, 0, 0, 0, 32
        ),
        bytes(32),
    )
    b.receive(hs, "direct", net.now)
    # garbage of every size
    for n in (0, 1, 47, 48, 1000, frame.MAX_FRAME + 1):
        b.receive(bytes(n), "direct", net.now)
    net.flush("b")
    st = b.stats
    assert st["rejected_crypto_auth"] == 1
    assert st["rejected_crypto_replay"] == 2
    assert st["rejected_state"] == 1
    assert st["rejected_frame_truncated"] == 3
    assert st["rejected_frame_oversized"] == 1
    assert st["rejected_frame_crc"] == 3  # 48 and 1000 zero bytes fail the CRC
    rejected = [e for e in ev if isinstance(e, FrameRejected)]
    assert len(rejected) == st["rejected_total"] == 11
    assert {e.kind for e in rejected} == {"frame", "crypto", "state"}
    assert not of(ev, MessageReceived)


def test_encrypted_frame_before_handshake_is_a_state_error() -> None:
    net, _a, _b = make_pair(37)
    establish(net)
    net.log_wire = True
    send_all(net, "a", [(MessageClass.HIGH, b"x")], {})
    f = next(f for _, src, _, f in net.wire_log if src == "a")
    fresh = Session(SessionConfig("sess-1", False, make_identity(2)), now=net.now)
    fresh.receive(f, "direct", net.now)
    assert fresh.stats["rejected_state"] == 1
    assert fresh.next_event() == FrameRejected("state", "state", "direct")
