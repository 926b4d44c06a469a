import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmed.core import frame
from p2pmed.core.crypto import RecvKeys, SendKeys, derive_sas
from p2pmed.core.errors import CryptoError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import (
    HANDSHAKE_PN,
    Handshake,
    HandshakeResult,
    commitment,
    transcript_hash,
)
from p2pmed.core.identity import Identity

ID_I = Identity.from_private_bytes(bytes([1]) * 32)
ID_R = Identity.from_private_bytes(bytes([2]) * 32)
ID_M = Identity.from_private_bytes(bytes([3]) * 32)
FP_I = hashlib.sha256(b"cert of I").digest()
FP_R = hashlib.sha256(b"cert of R").digest()
FP_M = hashlib.sha256(b"cert of the attacker").digest()
SIZES = {
    FrameType.HS_COMMIT: 32,
    FrameType.HS_REPLY: 128,
    FrameType.HS_REVEAL: 192,
    FrameType.HS_CONFIRM: 64,
}


def _rand(seed: int) -> Callable[[int], bytes]:
    return lambda n: hashlib.sha256(bytes([seed])).digest()[:n]


def _pair(
    sid: str = "session-1", *, i_sees: bytes = FP_R, r_sees: bytes = FP_I, **kw_r: object
) -> tuple[Handshake, Handshake]:
    i = Handshake(ID_I, initiator=True, session_id=sid, local_fp=FP_I, remote_fp=i_sees)
    r = Handshake(
        ID_R,
        initiator=False,
        session_id=sid,
        local_fp=FP_R,
        remote_fp=r_sees,
        **kw_r,  # type: ignore[arg-type]
    )
    return i, r


def _steps(i: Handshake, r: Handshake) -> list[tuple[FrameType, bytes]]:
    """Run to completion; returns the four (type, payload) messages."""
    assert r.start() is None
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    confirm = r.receive(*reveal)
    assert confirm is not None
    assert i.receive(*confirm) is None
    return [commit, reply, reveal, confirm]


def _results(i: Handshake, r: Handshake) -> tuple[HandshakeResult, HandshakeResult]:
    assert i.result is not None and r.result is not None
    return i.result, r.result


def _expect(reason: str, fn: Callable[[], object]) -> CryptoError:
    with pytest.raises(CryptoError) as e:
        fn()
    assert e.value.reason == reason, e.value
    return e.value


def test_happy_path_both_roles() -> None:
    i, r = _pair()
    msgs = _steps(i, r)
    assert [m[0] for m in msgs] == list(SIZES)
    assert [len(m[1]) for m in msgs] == list(SIZES.values())
    assert i.complete and r.complete
    ri, rr = _results(i, r)
    assert ri.sas == rr.sas
    assert ri.transcript_hash == rr.transcript_hash
    assert ri.send_chain == rr.recv_chain and ri.recv_chain == rr.send_chain
    assert ri.send_chain != ri.recv_chain
    assert ri.peer_public == ID_R.public_bytes and rr.peer_public == ID_I.public_bytes
    assert ri.peer_fingerprint == ID_R.fingerprint()
    assert rr.peer_fingerprint == ID_I.fingerprint()
    # the chains work with the AEAD layer in both directions
    header = Header(
        FrameType.DATA, Flags.FIRST | Flags.LAST, MessageClass.CRITICAL, 1, 1, 0, 0, 0, 0
    )
    wire = SendKeys(ri.send_chain, now=0.0).seal(header, b"to R")
    assert RecvKeys(rr.recv_chain).open(frame.decode(wire)[0], wire, 0.0) == b"to R"
    wire = SendKeys(rr.send_chain, now=0.0).seal(header, b"to I")
    assert RecvKeys(ri.recv_chain).open(frame.decode(wire)[0], wire, 0.0) == b"to I"


def test_transcript_matches_spec() -> None:
    i, r = _pair()
    commit, reply, reveal, _ = _steps(i, r)
    eph_i = reveal[1][:32]
    assert commit[1] == commitment(eph_i, ID_I.public_bytes)
    assert reply[1][32:64] == ID_R.public_bytes
    assert reply[1][64:] == FP_R + FP_I
    assert reveal[1][64:128] == FP_I + FP_R
    t = transcript_hash("session-1", commit[1], reply[1], reveal[1])
    assert _results(i, r)[0].transcript_hash == t


def test_relay_only_session_uses_zero_fingerprints() -> None:
    i = Handshake(ID_I, initiator=True, session_id="s")
    r = Handshake(ID_R, initiator=False, session_id="s")
    msgs = _steps(i, r)
    assert msgs[1][1][64:] == bytes(64)
    ri, rr = _results(i, r)
    assert ri.sas == rr.sas


def test_fresh_ephemerals_give_fresh_keys() -> None:
    a, b = _pair(), _pair()
    _steps(*a)
    _steps(*b)
    assert _results(*a)[0].send_chain != _results(*b)[0].send_chain


def test_handshake_frames_encode_as_plaintext_epoch0() -> None:
    i, r = _pair()
    for pn, (ftype, payload) in enumerate(_steps(i, r)):
        assert HANDSHAKE_PN[ftype] == pn
        header = Header(ftype, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, 0, len(payload))
        decoded, body = frame.decode(frame.encode(header, payload))
        assert decoded.epoch == 0 and body == payload


# --- DTLS fingerprint binding ---------------------------------------------------------


def test_swapped_fingerprint_refused_by_initiator() -> None:
    """The signaling server put its own fingerprint in the answer SDP that I sees."""
    i, r = _pair(i_sees=FP_M)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    _expect("fingerprint", lambda: i.receive(*reply))
    assert i.failed and i.result is None
    _expect("handshake", lambda: i.receive(*reply))  # refused for good


def _lax_initiator_run(r: Handshake, seed: int = 5) -> tuple[FrameType, bytes]:
    """An initiator that skips its own fingerprint checks (e.g. a buggy third-party
    implementation): commits, and reveals its true fingerprints with a valid signature."""
    secret = X25519PrivateKey.from_private_bytes(_rand(seed)(32))
    e_i = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    commit = commitment(e_i, ID_I.public_bytes)
    reply = r.receive(FrameType.HS_COMMIT, commit)
    assert reply is not None
    head = e_i + ID_I.public_bytes + FP_I + FP_R
    t = transcript_hash("session-1", commit, reply[1], head)
    return FrameType.HS_REVEAL, head + ID_I.sign(b"p2pmed v1 initiator" + t)


def test_lax_initiator_model_is_accepted_when_views_agree() -> None:
    """Control for the next test: the hand-built initiator passes when nothing is swapped."""
    _, r = _pair()
    assert r.receive(*_lax_initiator_run(r)) is not None
    assert r.complete


def test_swapped_fingerprint_refused_by_responder() -> None:
    """The server put its own fingerprint in the offer SDP that R sees. Even if the
    initiator does not check, R refuses on its own."""
    _, r = _pair(r_sees=FP_M)
    _expect("fingerprint", lambda: r.receive(*_lax_initiator_run(r)))
    assert r.failed and r.result is None


def test_swapped_fingerprint_seen_by_responder_refused_by_initiator() -> None:
    """Same swap with an honest initiator: I already refuses at HS_REPLY."""
    i, r = _pair(r_sees=FP_M)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    _expect("fingerprint", lambda: i.receive(*reply))


def test_mitm_terminating_both_dtls_legs_is_refused() -> None:
    """The server swaps both fingerprints and relays the handshake bytes unchanged."""
    i, r = _pair(i_sees=FP_M, r_sees=FP_M)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    _expect("fingerprint", lambda: i.receive(*reply))


def test_mitm_rewriting_fingerprint_fields_breaks_signature() -> None:
    i, r = _pair(i_sees=FP_M, r_sees=FP_M)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    forged = reply[1][:64] + FP_M + FP_I  # what I expects to see
    reveal = i.receive(FrameType.HS_REPLY, forged)
    assert reveal is not None
    forged_reveal = reveal[1][:64] + FP_I + FP_R + reveal[1][128:]  # what R expects
    _expect("signature", lambda: r.receive(FrameType.HS_REVEAL, forged_reveal))


def test_set_fingerprints_before_use() -> None:
    i = Handshake(ID_I, initiator=True, session_id="s")
    r = Handshake(ID_R, initiator=False, session_id="s")
    i.set_fingerprints(FP_I, FP_R)
    r.set_fingerprints(FP_R, FP_I)
    msgs = _steps(i, r)
    assert msgs[1][1][64:] == FP_R + FP_I
    _expect("handshake", lambda: i.set_fingerprints(FP_I, FP_M))
    with pytest.raises(ValueError):
        Handshake(ID_I, initiator=True, session_id="s", local_fp=b"short")


# --- signatures, commitment, session id --------------------------------------------------


def test_bad_initiator_signature() -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    bad = reveal[1][:-1] + bytes([reveal[1][-1] ^ 0x40])
    _expect("signature", lambda: r.receive(FrameType.HS_REVEAL, bad))
    _expect("handshake", lambda: r.receive(*reveal))  # the session is refused


def test_bad_responder_signature() -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    confirm = r.receive(*reveal)
    assert confirm is not None
    _expect("signature", lambda: i.receive(FrameType.HS_CONFIRM, bytes(64)))
    assert not i.complete and i.result is None


def test_identity_substitution_in_reply() -> None:
    """A MITM swaps R's identity key in HS_REPLY for its own. I signs a transcript R never
    saw, so R refuses; the MITM can finish with I only under its own identity."""
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    forged = reply[1][:32] + ID_M.public_bytes + reply[1][64:]
    reveal = i.receive(FrameType.HS_REPLY, forged)
    assert reveal is not None
    _expect("signature", lambda: r.receive(*reveal))
    t = transcript_hash("session-1", commit[1], forged, reveal[1])
    i.receive(FrameType.HS_CONFIRM, ID_M.sign(b"p2pmed v1 responder" + t))
    assert i.result is not None
    assert i.result.peer_fingerprint == ID_M.fingerprint() != ID_R.fingerprint()


def test_wrong_session_id() -> None:
    i = Handshake(ID_I, initiator=True, session_id="session-A", local_fp=FP_I, remote_fp=FP_R)
    r = Handshake(ID_R, initiator=False, session_id="session-B", local_fp=FP_R, remote_fp=FP_I)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    _expect("signature", lambda: r.receive(*reveal))


def test_reveal_not_matching_commit() -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    bad = bytes([reveal[1][0] ^ 1]) + reveal[1][1:]
    _expect("commit", lambda: r.receive(FrameType.HS_REVEAL, bad))


def test_commit_binds_ephemeral_before_reply() -> None:
    """An initiator (or MITM) cannot switch to another ephemeral after seeing eR, even
    with a perfectly valid signature over the new transcript."""
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    other = Handshake(
        ID_I,
        initiator=True,
        session_id="session-1",
        local_fp=FP_I,
        remote_fp=FP_R,
        random=_rand(99),
    )
    other.start()
    switched = other.receive(*reply)  # validly signed, but for a different eI
    assert switched is not None
    _expect("commit", lambda: r.receive(*switched))


# --- malformed, out of order, replayed ---------------------------------------------------


def test_out_of_order_messages_keep_state() -> None:
    i, r = _pair()
    i2, r2 = _pair()
    msgs = _steps(i2, r2)  # a complete, valid message set to replay out of order
    _expect("handshake", lambda: r.receive(*msgs[2]))  # REVEAL before COMMIT
    _expect("handshake", lambda: r.receive(*msgs[1]))  # a type R never receives
    _expect("handshake", lambda: r.receive(FrameType.DATA, bytes(32)))
    _expect("handshake", lambda: i.receive(*msgs[1]))  # REPLY before start()
    commit = i.start()
    assert commit is not None
    _expect("handshake", lambda: i.receive(*msgs[3]))  # CONFIRM before REPLY
    _expect("handshake", lambda: i.receive(*commit))  # own message reflected
    _steps_from(i, r, commit)
    assert i.complete and r.complete


def _steps_from(i: Handshake, r: Handshake, commit: tuple[FrameType, bytes]) -> None:
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    confirm = r.receive(*reveal)
    assert confirm is not None
    assert i.receive(*confirm) is None


def test_duplicates_are_refused_without_harm() -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    _expect("handshake", lambda: r.receive(*commit))  # resent COMMIT
    reveal = i.receive(*reply)
    assert reveal is not None
    _expect("handshake", lambda: i.receive(*reply))  # resent REPLY
    confirm = r.receive(*reveal)
    assert confirm is not None
    _expect("handshake", lambda: r.receive(*reveal))  # resent REVEAL after completion
    assert i.receive(*confirm) is None
    _expect("handshake", lambda: i.receive(*confirm))
    assert _results(i, r)[0].sas == _results(i, r)[1].sas


def test_replay_of_an_old_session_fails() -> None:
    old_i, old_r = _pair()
    old = _steps(old_i, old_r)
    r = Handshake(ID_R, initiator=False, session_id="session-1", local_fp=FP_R, remote_fp=FP_I)
    assert r.receive(*old[0]) is not None  # the old COMMIT is well-formed...
    _expect("signature", lambda: r.receive(*old[2]))  # ...but R's fresh eR changed T


@pytest.mark.parametrize("step", [0, 1, 2, 3])
@pytest.mark.parametrize("delta", [-1, +1, -10_000])
def test_truncated_and_oversized(step: int, delta: int) -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    receiver = r if step % 2 == 0 else i
    good = [commit]
    if step >= 1:
        good.append(r.receive(*commit))  # type: ignore[arg-type]
    if step >= 2:
        good.append(i.receive(*good[1]))  # type: ignore[arg-type]
    if step >= 3:
        good.append(r.receive(*good[2]))  # type: ignore[arg-type]
    ftype, payload = good[step]
    bad = payload[: len(payload) + delta] if delta < 0 else payload + b"\0"
    _expect("handshake", lambda: receiver.receive(ftype, bad))
    _expect("handshake", lambda: receiver.receive(ftype, payload + bytes(10_000)))
    assert not receiver.failed
    assert receiver.receive(ftype, payload) is not None or receiver.complete


def test_start_rules() -> None:
    i, r = _pair()
    assert r.start() is None
    assert i.start() is not None
    _expect("handshake", lambda: i.start())


def test_low_order_ephemeral_refused() -> None:
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    _expect("handshake", lambda: i.receive(FrameType.HS_REPLY, bytes(32) + reply[1][32:]))
    assert i.failed


def test_pinned_peer_key() -> None:
    i, r = _pair(peer_public=ID_I.public_bytes)
    _steps(i, r)
    assert r.complete
    i, r = _pair(peer_public=ID_M.public_bytes)
    commit = i.start()
    assert commit is not None
    reply = r.receive(*commit)
    assert reply is not None
    reveal = i.receive(*reply)
    assert reveal is not None
    err = _expect("identity", lambda: r.receive(*reveal))
    assert ID_I.fingerprint() in str(err)


# --- man in the middle with its own keys ---------------------------------------------------


def test_mitm_with_own_keys_gets_different_sas() -> None:
    """Relay-only session (no fingerprints): a MITM runs one handshake with each side.

    Both sides complete, but they see the attacker's identity and different SAS values.
    """
    i = Handshake(ID_I, initiator=True, session_id="s", random=_rand(1))
    r = Handshake(ID_R, initiator=False, session_id="s", random=_rand(2))
    m_as_r = Handshake(ID_M, initiator=False, session_id="s", random=_rand(3))
    m_as_i = Handshake(ID_M, initiator=True, session_id="s", random=_rand(4))
    commit = i.start()
    m_commit = m_as_i.start()
    assert commit is not None and m_commit is not None
    m_reply = m_as_r.receive(*commit)
    reply = r.receive(*m_commit)
    assert m_reply is not None and reply is not None
    reveal = i.receive(*m_reply)
    m_reveal = m_as_i.receive(*reply)
    assert reveal is not None and m_reveal is not None
    m_confirm = m_as_r.receive(*reveal)
    confirm = r.receive(*m_reveal)
    assert m_confirm is not None and confirm is not None
    assert i.receive(*m_confirm) is None and m_as_i.receive(*confirm) is None
    ri, rr = _results(i, r)
    assert ri.peer_fingerprint == ID_M.fingerprint() != ID_R.fingerprint()
    assert rr.peer_fingerprint == ID_M.fingerprint()
    assert ri.sas != rr.sas


def test_mitm_cannot_steer_initiator_sas_with_its_reply() -> None:
    """The attacker's reply to I is fixed before eI is revealed. With the same reply, the
    SAS I shows still depends on I's secret ephemeral, so no reply can be chosen to hit a
    target SAS: the attacker has one blind guess."""
    sas_values = set()
    m = Handshake(ID_M, initiator=False, session_id="s", random=_rand(3))
    fixed_reply = None
    for seed in range(8):
        i = Handshake(ID_I, initiator=True, session_id="s", random=_rand(10 + seed))
        commit = i.start()
        assert commit is not None
        if fixed_reply is None:
            fixed_reply = m.receive(*commit)
        assert fixed_reply is not None
        reveal = i.receive(*fixed_reply)
        assert reveal is not None
        t = transcript_hash("s", commit[1], fixed_reply[1], reveal[1])
        sas_values.add(derive_sas(t))
    assert len(sas_values) == 8


# --- hostile input ---------------------------------------------------------------------


_types = st.sampled_from(list(FrameType))
_payloads = st.one_of(
    st.binary(max_size=260),
    st.sampled_from([32, 64, 128, 192]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)


@given(st.lists(st.tuples(st.integers(0, 3), _types, _payloads), max_size=12))
@settings(max_examples=200, deadline=None)
def test_any_input_is_crypto_error_or_valid(msgs: list[tuple[int, FrameType, bytes]]) -> None:
    i, r = _pair()
    i.start()
    for who, ftype, payload in msgs:
        hs = i if who % 2 == 0 else r
        try:
            out = hs.receive(ftype, payload)
        except CryptoError:
            continue
        if out is not None:
            out_type, out_payload = out
            assert len(out_payload) == SIZES[out_type]
        if hs.complete:
            assert hs.result is not None and len(hs.result.send_chain) == 32


@given(_types, _payloads, st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_junk_does_not_break_a_handshake(ftype: FrameType, junk: bytes, at: int) -> None:
    """Junk that is rejected leaves both sides able to finish the real handshake."""
    i, r = _pair()
    commit = i.start()
    assert commit is not None
    target = r if at % 2 == 0 else i
    msg: tuple[FrameType, bytes] | None = commit
    receivers = [r, i, r, i]
    for step in range(4):
        if step == at:
            try:
                target.receive(ftype, junk)
                return  # accepted junk changed the run (e.g. a 32-byte "commit"): valid
            except CryptoError:
                if target.failed:
                    return  # a verification failure refuses the session by design
        assert msg is not None
        msg = receivers[step].receive(*msg)
    assert i.complete and r.complete
    assert _results(i, r)[0].sas == _results(i, r)[1].sas
