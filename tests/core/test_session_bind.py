"""Direct-path binding (docs/protocol.md, PATH_BIND): the handshake carries zero fingerprints;
a direct path is bound only by a PATH_BIND naming the certificates each side's DTLS verified."""

from __future__ import annotations

import pytest

from p2pmed.core import frame
from p2pmed.core.events import FrameRejected, PathBound, SessionClosed
from p2pmed.core.frame import FrameType
from p2pmed.core.session import SessionState
from tests.core.sessionkit import establish, of
from tests.core.simnet import PathCfg, make_pair

FA, FB = bytes([0xA]) * 32, bytes([0xB]) * 32  # a's and b's own certificates
FM = bytes([0xE]) * 32  # a certificate of a man in the middle


def paths() -> dict[str, PathCfg]:
    return {"direct": PathCfg(latency=0.005), "relay": PathCfg(latency=0.02)}


def test_handshake_fingerprint_fields_are_always_zero() -> None:
    net, a, b = make_pair(3)
    net.log_wire = True
    a.set_fingerprints(FA, FB)  # DTLS connected before the handshake: no effect on it
    b.set_fingerprints(FB, FA)
    establish(net)
    hs = {}
    for _t, _src, _path, data in net.wire_log:
        header, payload = frame.decode(data)
        hs[header.type] = payload
    assert hs[FrameType.HS_REPLY][64:128] == bytes(64)
    assert hs[FrameType.HS_REVEAL][64:128] == bytes(64)
    # the PATH_BINDs queued at establishment bind the path on both sides
    net.run_for(0.1)
    assert of(net.ends["a"].events, PathBound) == [PathBound(FA, FB)]
    assert of(net.ends["b"].events, PathBound) == [PathBound(FB, FA)]
    assert a.bound == (FA, FB) and b.bound == (FB, FA)


def test_mitm_certificate_closes_the_session_on_both_sides() -> None:
    net, a, b = make_pair(38, paths=paths())
    establish(net)
    # each side's DTLS ended at the attacker: each saw the attacker's certificate
    net.call("a", lambda s: s.set_fingerprints(FA, FM))
    net.call("b", lambda s: s.set_fingerprints(FB, FM))
    net.run_for(0.2)
    assert a.state is SessionState.CLOSED and b.state is SessionState.CLOSED
    assert a.bound is None and b.bound is None
    for ep in (net.ends["a"], net.ends["b"]):
        closed = of(ep.events, SessionClosed)
        assert closed and "fingerprint" in closed[0].reason  # type: ignore[attr-defined]
        assert not of(ep.events, PathBound)
    rejected = a.stats.get("rejected_crypto_fingerprint", 0) + b.stats.get(
        "rejected_crypto_fingerprint", 0
    )
    assert rejected >= 1


def test_early_bind_is_held_until_local_dtls_connects() -> None:
    net, a, b = make_pair(40, paths=paths())
    establish(net)
    b.expect_direct(FB)  # b negotiates with certificate FB; its DTLS is still connecting
    net.call("a", lambda s: s.set_fingerprints(FA, FB))  # a's DTLS connected first
    net.run_for(0.1)
    assert b.stats["held_binds"] == 1 and b.bound is None
    assert not of(net.ends["b"].events, PathBound)
    net.call("b", lambda s: s.set_fingerprints(FB, FA))
    net.run_for(0.1)
    assert of(net.ends["b"].events, PathBound) == [PathBound(FB, FA)]
    assert of(net.ends["a"].events, PathBound) == [PathBound(FA, FB)]
    assert a.stats["rejected_total"] == b.stats["rejected_total"] == 0


def test_held_bind_for_another_certificate_is_refused_when_dtls_connects() -> None:
    net, _a, b = make_pair(41, paths=paths())
    establish(net)
    b.expect_direct(FB)
    net.call("a", lambda s: s.set_fingerprints(FA, FB))
    net.run_for(0.1)
    net.call("b", lambda s: s.set_fingerprints(FB, FM))  # b's DTLS saw someone else
    net.run_for(0.1)
    assert b.state is SessionState.CLOSED
    assert FrameRejected("fingerprint", "crypto", "direct") in net.ends["b"].events
    assert not of(net.ends["b"].events, PathBound)


def test_path_bind_from_an_earlier_negotiation_is_stale_not_an_attack() -> None:
    net, a, b = make_pair(43, paths=paths())
    establish(net)
    fa2, fb2 = bytes([0xA2]) * 32, bytes([0xB2]) * 32
    a.expect_direct(FA)
    a.expect_direct(fa2)  # a negotiates twice; b's binds arrive before a's DTLS connects
    b.set_fingerprints(FB, FA)
    b.set_fingerprints(fb2, fa2)  # b renegotiated before a's bind for the first one arrived
    net.call("a", lambda s: s.set_fingerprints(FA, FB))
    net.run_for(0.1)
    assert b.stats["stale_binds"] == 1
    assert b.stats["rejected_total"] == 0 and b.bound is None
    net.call("a", lambda s: s.set_fingerprints(fa2, fb2))
    net.run_for(0.1)
    assert b.bound == (fb2, fa2) and b.stats["rejected_total"] == 0
    # a pair b never negotiated is still refused
    net.call("a", lambda s: s.set_fingerprints(fa2, FM))
    net.run_for(0.1)
    assert b.stats["rejected_crypto_fingerprint"] == 1
    assert b.state is SessionState.CLOSED


def test_remembered_fingerprints_of_an_abandoned_offer_are_stale() -> None:
    net, a, b = make_pair(44, paths=paths())
    establish(net)
    a.expect_direct(bytes([0xA2]) * 32)
    fb2 = bytes([0xB2]) * 32
    b.remember_fingerprints(FB, FA)
    b.set_fingerprints(fb2, bytes([0xA2]) * 32)
    net.call("a", lambda s: s.set_fingerprints(FA, FB))
    net.run_for(0.1)
    assert b.stats["stale_binds"] == 1 and b.stats["rejected_total"] == 0
    with pytest.raises(ValueError):
        b.remember_fingerprints(b"short", FA)
    with pytest.raises(ValueError):
        b.set_fingerprints(FB, b"short")


def test_bind_with_no_negotiation_here_is_stale() -> None:
    """A PATH_BIND that waited in the server's queue while we restarted: we have no direct
    negotiation at all, so it is counted as stale, not taken for an attack."""
    net, a, b = make_pair(45, paths=paths())
    establish(net)
    net.call("a", lambda s: s.set_fingerprints(FA, FM))
    net.run_for(0.1)
    assert b.stats["stale_binds"] == 1 and b.state is SessionState.ESTABLISHED
    b.expect_direct(FB)  # then a real negotiation: binds as usual
    net.call("b", lambda s: s.set_fingerprints(FB, FA))
    net.call("a", lambda s: s.set_fingerprints(FA, FB))
    net.run_for(0.1)
    assert a.bound == (FA, FB) and b.bound == (FB, FA)
    assert a.stats["rejected_total"] == b.stats["rejected_total"] == 0
