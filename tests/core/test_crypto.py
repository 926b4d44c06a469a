import hashlib
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmed.core import crypto, frame
from p2pmed.core.crypto import (
    RecvKeys,
    ReplayWindow,
    SendKeys,
    derive_chains,
    derive_sas,
    epoch_key_iv,
    next_chain,
)
from p2pmed.core.errors import CryptoError, FrameError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass

CHAIN = bytes(range(32))


def _hdr(pn: int, **kw: object) -> Header:
    fields: dict[str, object] = dict(
        type=FrameType.DATA,
        flags=Flags.FIRST | Flags.LAST,
        cls=MessageClass.HIGH,
        epoch=0,
        pn=pn,
        seq=pn,
        ack=5,
        timestamp_us=1_700_000_000_000_000,
        length=0,
    )
    fields.update(kw)
    return Header(**fields)  # type: ignore[arg-type]


def _open(recv: RecvKeys, wire: bytes, now: float = 0.0) -> bytes:
    header, _ = frame.decode(wire)
    return recv.open(header, wire, now)


def _refix_crc(data: bytes | bytearray) -> bytes:
    body = bytes(data[:-4])
    return body + frame.crc32(body).to_bytes(4, "big")


def test_seal_open_roundtrip() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    wire = send.seal(_hdr(1, epoch=77, length=999), b"ecg samples")
    header, payload = frame.decode(wire)  # a valid frame: CRC, length, epoch all right
    assert payload == wire[44:-4]
    assert header.epoch == 1
    assert header.length == len(b"ecg samples") + 16
    assert len(wire) == 64 + len(b"ecg samples")
    assert recv.open(header, wire, 0.0) == b"ecg samples"
    assert b"ecg samples" not in wire


def test_nonce_and_aad_layout() -> None:
    """Independent decryption with the documented key, nonce = iv || pn and AAD = header."""
    send = SendKeys(CHAIN, now=0.0)
    wire = send.seal(_hdr(0x0102030405060708), b"hello")
    key, iv = epoch_key_iv(CHAIN)
    nonce = iv + (0x0102030405060708).to_bytes(8, "big")
    assert AESGCM(key).decrypt(nonce, wire[44:-4], wire[:44]) == b"hello"


def test_empty_plaintext_and_max_chunk() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    assert _open(recv, send.seal(_hdr(1), b"")) == b""
    big = bytes(frame.MAX_CHUNK)
    wire = send.seal(_hdr(2), big)
    assert len(wire) == frame.MAX_FRAME
    assert _open(recv, wire) == big
    with pytest.raises(ValueError):
        send.seal(_hdr(3), bytes(frame.MAX_CHUNK + 1))


def test_seal_refuses_handshake_types() -> None:
    send = SendKeys(CHAIN, now=0.0)
    with pytest.raises(ValueError):
        send.seal(_hdr(1, type=FrameType.HS_COMMIT), b"x")


def test_seal_never_reuses_a_pn() -> None:
    send = SendKeys(CHAIN, now=0.0)
    send.seal(_hdr(5), b"a")
    for pn in (5, 4, 0):
        with pytest.raises(CryptoError) as e:
            send.seal(_hdr(pn), b"b")
        assert e.value.reason == "nonce"
    send.ratchet(1.0)  # pn is per direction, not per epoch
    with pytest.raises(CryptoError):
        send.seal(_hdr(5), b"c")
    send.seal(_hdr(6), b"d")


def test_aead_object_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    built: list[bytes] = []
    real = crypto.AESGCM

    def counting(key: bytes) -> AESGCM:
        built.append(key)
        return real(key)

    monkeypatch.setattr(crypto, "AESGCM", counting)
    for pn in range(1, 50):
        _open(recv, send.seal(_hdr(pn), b"x" * pn))
    assert built == []


def test_wrong_direction_key_fails() -> None:
    i2r, r2i = derive_chains(bytes(32), bytes(32))
    assert i2r != r2i
    wire = SendKeys(i2r, now=0.0).seal(_hdr(1), b"x")
    with pytest.raises(CryptoError) as e:
        _open(RecvKeys(r2i), wire)
    assert e.value.reason == "auth"


@pytest.mark.parametrize("offset", [1, 2, 3, 16, 23, 24, 31, 32, 39, 44, 50, -5])
def test_any_tampered_byte_fails_auth(offset: int) -> None:
    """Header bytes are AAD; payload bytes are ciphertext/tag. CRC is recomputed."""
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    wire = bytearray(send.seal(_hdr(1, type=FrameType.DATA), b"some payload"))
    wire[offset] ^= 0x01 if offset != 1 else 0x03  # DATA(1)->ACK(2)
    tampered = _refix_crc(wire)
    header, _ = frame.decode(tampered)
    with pytest.raises(CryptoError) as e:
        recv.open(header, tampered, 0.0)
    assert e.value.reason == "auth"
    assert _open(recv, send.seal(_hdr(2), b"ok")) == b"ok"  # nothing was disturbed


def test_tampered_pn_fails_auth() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    wire = bytearray(send.seal(_hdr(1), b"x"))
    wire[15] ^= 0x02
    tampered = _refix_crc(wire)
    with pytest.raises(CryptoError) as e:
        _open(recv, tampered)
    assert e.value.reason == "auth"


def test_header_must_match_frame_bytes() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    wire = send.seal(_hdr(3), b"x")
    header, _ = frame.decode(wire)
    variants = [
        _hdr(4, epoch=1, length=header.length),
        _hdr(3, epoch=2, length=header.length),
    ]
    for v in variants:
        with pytest.raises(CryptoError) as e:
            recv.open(v, wire, 0.0)
        assert e.value.reason == "auth"
    with pytest.raises(CryptoError):
        recv.open(header, wire[:-1], 0.0)
    assert recv.open(header, wire, 0.0) == b"x"


def test_ratchet_and_previous_epoch_grace() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    old = send.seal(_hdr(1), b"epoch1")
    send.ratchet(5.0)
    assert send.epoch == 2
    new = send.seal(_hdr(2), b"epoch2")
    assert frame.decode(new)[0].epoch == 2
    assert _open(recv, new, now=100.0) == b"epoch2"
    assert recv.epoch == 2 and recv.previous_epoch == 1
    assert _open(recv, old, now=109.0) == b"epoch1"  # within 10 s, and refreshes the grace
    assert _open(recv, old, now=118.9) == b"epoch1"
    with pytest.raises(CryptoError) as e:
        _open(recv, old, now=129.0)
    assert e.value.reason == "epoch"
    assert recv.previous_epoch is None


def test_expire_drops_previous_key() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    old = send.seal(_hdr(1), b"a")
    send.ratchet(0.0)
    _open(recv, send.seal(_hdr(2), b"b"), now=0.0)
    recv.expire(9.0)
    assert recv.previous_epoch == 1
    recv.expire(10.0)
    assert recv.previous_epoch is None
    with pytest.raises(CryptoError):
        _open(recv, old, now=0.0)


def test_jump_two_epochs_drops_the_oldest() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    e1 = send.seal(_hdr(1), b"1")
    send.ratchet(0.0)
    e2 = send.seal(_hdr(2), b"2")
    send.ratchet(0.0)
    e3 = send.seal(_hdr(3), b"3")
    assert _open(recv, e3) == b"3"
    assert recv.epoch == 3
    assert _open(recv, e2) == b"2"
    with pytest.raises(CryptoError) as e:
        _open(recv, e1)
    assert e.value.reason == "epoch"


def test_epoch_more_than_two_ahead_is_refused() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    for _ in range(3):
        send.ratchet(0.0)
    with pytest.raises(CryptoError) as e:
        _open(recv, send.seal(_hdr(1), b"x"))
    assert e.value.reason == "epoch"
    assert recv.epoch == 1


def test_forged_future_epoch_does_not_advance() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    wire = bytearray(send.seal(_hdr(1), b"x"))
    wire[7] = 2  # claim epoch 2 without knowing its key
    forged = _refix_crc(wire)
    with pytest.raises(CryptoError) as e:
        _open(recv, forged)
    assert e.value.reason == "auth"
    assert recv.epoch == 1 and recv.previous_epoch is None
    assert _open(recv, send.seal(_hdr(2), b"still epoch 1")) == b"still epoch 1"


def test_many_ratchets_stay_in_step() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    for pn in range(1, 20):
        send.ratchet(float(pn))
        assert _open(recv, send.seal(_hdr(pn), bytes([pn]))) == bytes([pn])
    assert recv.epoch == send.epoch == 20


def test_ratchet_schedule_matches_kdf() -> None:
    c2 = next_chain(CHAIN)
    send = SendKeys(CHAIN, now=0.0)
    send.ratchet(0.0)
    wire = send.seal(_hdr(1), b"x")
    assert _open(RecvKeys(c2, epoch=2), wire) == b"x"
    assert epoch_key_iv(c2) != epoch_key_iv(CHAIN)


def test_needs_ratchet() -> None:
    send = SendKeys(CHAIN, now=100.0)
    assert not send.needs_ratchet(100.0)
    assert not send.needs_ratchet(3699.9)
    assert send.needs_ratchet(3700.0)
    for pn in range(3):
        send.seal(_hdr(pn), b"")
    assert send.frames_in_epoch == 3
    assert send.needs_ratchet(100.0, max_frames=3)
    assert not send.needs_ratchet(100.0, max_frames=4)
    assert send.needs_ratchet(160.0, max_age=60.0)
    send.ratchet(200.0)
    assert send.frames_in_epoch == 0
    assert not send.needs_ratchet(3799.0)
    assert send.needs_ratchet(3800.0)


def test_send_state_roundtrip() -> None:
    send = SendKeys(CHAIN, now=10.0)
    send.seal(_hdr(7), b"a")
    send.ratchet(20.0)
    send.seal(_hdr(8), b"b")
    restored = SendKeys.from_state(send.export_state())
    assert restored.epoch == 2
    assert restored.frames_in_epoch == 1
    assert restored.needs_ratchet(3620.0) and not restored.needs_ratchet(3619.0)
    with pytest.raises(CryptoError):
        restored.seal(_hdr(8), b"c")  # pn guard survives a restore
    recv = RecvKeys(CHAIN)
    assert _open(recv, restored.seal(_hdr(9), b"c")) == b"c"


def test_recv_state_roundtrip() -> None:
    send, recv = SendKeys(CHAIN, now=0.0), RecvKeys(CHAIN)
    old = send.seal(_hdr(1), b"old")
    send.ratchet(0.0)
    _open(recv, send.seal(_hdr(2), b"new"), now=50.0)
    restored = RecvKeys.from_state(recv.export_state())
    assert restored.epoch == 2 and restored.previous_epoch == 1
    assert _open(restored, old, now=55.0) == b"old"
    send.ratchet(0.0)
    assert _open(restored, send.seal(_hdr(3), b"e3"), now=56.0) == b"e3"
    fresh = RecvKeys.from_state(RecvKeys(CHAIN).export_state())
    assert _open(fresh, SendKeys(CHAIN, now=0.0).seal(_hdr(1), b"z")) == b"z"


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"epoch": 1},
        {"epoch": 0, "chain": CHAIN.hex()},
        {"epoch": True, "chain": CHAIN.hex()},
        {"epoch": 1, "chain": "zz"},
        {"epoch": 1, "chain": CHAIN.hex()[:-2]},
        {"epoch": 1, "chain": 5},
        {"epoch": 2, "chain": CHAIN.hex(), "prev": "x"},
        {"epoch": 2, "chain": CHAIN.hex(), "prev": {"epoch": 2, "key": "", "iv": ""}},
        {"epoch": 2, "chain": CHAIN.hex(), "prev": {"epoch": 1, "key": "00", "iv": "00"}},
    ],
)
def test_malformed_recv_state(state: dict[str, object]) -> None:
    with pytest.raises(CryptoError) as e:
        RecvKeys.from_state(state)
    assert e.value.reason == "bad_state"


@pytest.mark.parametrize(
    "patch",
    [
        {"frames": -1},
        {"frames": "1"},
        {"started": None},
        {"last_pn": -2},
        {"last_pn": 2**64},
        {"epoch": 2**32},
    ],
)
def test_malformed_send_state(patch: dict[str, object]) -> None:
    state = SendKeys(CHAIN, now=0.0).export_state()
    state.update(patch)
    with pytest.raises(CryptoError) as e:
        SendKeys.from_state(state)
    assert e.value.reason == "bad_state"


def test_constructor_rejects_bad_chain() -> None:
    with pytest.raises(ValueError):
        SendKeys(b"short", now=0.0)
    with pytest.raises(ValueError):
        RecvKeys(CHAIN, epoch=0)


# --- replay window ---------------------------------------------------------------


def _replayed(w: ReplayWindow, pn: int) -> bool:
    try:
        w.check(pn)
    except CryptoError as e:
        assert e.reason == "replay"
        return True
    return False


def test_replay_basic() -> None:
    w = ReplayWindow()
    assert not _replayed(w, 0)
    assert not _replayed(w, 0)  # check alone does not record
    w.accept(0)
    assert _replayed(w, 0)
    w.accept(5)
    assert [_replayed(w, p) for p in range(7)] == [True, False, False, False, False, True, False]
    w.accept(3)
    assert _replayed(w, 3) and not _replayed(w, 4)


def test_replay_window_edges() -> None:
    w = ReplayWindow()
    w.accept(10_000)
    assert not _replayed(w, 10_000 - 4095)
    assert _replayed(w, 10_000 - 4096)  # too old to tell: refused
    w.accept(10_000 - 4095)
    assert _replayed(w, 10_000 - 4095)
    w.accept(10_001)  # slides by one: the oldest still-tracked entry keeps its bit
    assert _replayed(w, 10_000 - 4095)
    w.accept(10_000 + 5000)  # jump beyond the window resets it
    assert _replayed(w, 10_000)
    assert not _replayed(w, 10_000 + 4999)
    assert _replayed(w, 15_000)


def test_replay_out_of_range() -> None:
    w = ReplayWindow()
    for pn in (-1, 2**64):
        with pytest.raises(CryptoError):
            w.check(pn)
        with pytest.raises(CryptoError):
            w.accept(pn)
    w.accept(2**64 - 1)
    assert _replayed(w, 2**64 - 1)


@given(st.lists(st.integers(0, 6000), max_size=200))
@settings(max_examples=150, deadline=None)
def test_replay_matches_model(pns: list[int]) -> None:
    w = ReplayWindow()
    seen: set[int] = set()
    highest = -1
    for pn in pns:
        model_reject = pn in seen or (highest >= 0 and highest - pn >= 4096)
        assert _replayed(w, pn) == model_reject
        if not model_reject:
            w.accept(pn)
            seen.add(pn)
            highest = max(highest, pn)
    restored = ReplayWindow.from_state(w.export_state())
    for pn in range(0, 6001, 7):
        assert _replayed(restored, pn) == _replayed(w, pn)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"highest": 1},
        {"highest": 1, "bits": "xyz"},
        {"highest": -2, "bits": "1"},
        {"highest": 1, "bits": "1" + "0" * 1024},
    ],
)
def test_malformed_replay_state(state: dict[str, object]) -> None:
    with pytest.raises(CryptoError) as e:
        ReplayWindow.from_state(state)
    assert e.value.reason == "bad_state"


# --- SAS -------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_sas_format(t: bytes) -> None:
    sas = derive_sas(t)
    assert re.fullmatch(r"\d{3} \d{3}", sas)
    n = int.from_bytes(hashlib.sha256(b"p2pmed v1 sas" + t).digest()[:4], "big") % 1_000_000
    assert sas.replace(" ", "") == f"{n:06d}"


def test_sas_differs_for_different_transcripts() -> None:
    assert derive_sas(bytes(32)) != derive_sas(b"\x01" + bytes(31))


# --- hostile input ---------------------------------------------------------------


_headers = st.builds(
    Header,
    type=st.sampled_from(list(FrameType)),
    flags=st.sampled_from(list(Flags)),
    cls=st.sampled_from(list(MessageClass)),
    epoch=st.integers(-(2**40), 2**40),
    pn=st.integers(-(2**70), 2**70),
    seq=st.integers(0, 2**64 - 1),
    ack=st.integers(0, 2**64 - 1),
    timestamp_us=st.integers(0, 2**64 - 1),
    length=st.integers(-5, 2**33),
)


@given(_headers, st.binary(max_size=300), st.floats(allow_nan=True))
@settings(max_examples=300, deadline=None)
def test_open_any_input_only_crypto_error(header: Header, data: bytes, now: float) -> None:
    recv = RecvKeys(CHAIN)
    with pytest.raises(CryptoError):
        recv.open(header, data, now)
    assert recv.epoch == 1


@given(st.binary(min_size=0, max_size=200), st.integers(0, 3), st.integers(0, 2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_open_consistent_header_random_payload(payload: bytes, epoch: int, pn: int) -> None:
    head = _hdr(pn, epoch=epoch, length=len(payload))
    wire = frame.encode(head, payload) if len(payload) <= frame.MAX_PAYLOAD else b""
    recv = RecvKeys(CHAIN)
    with pytest.raises(CryptoError) as e:
        recv.open(head, wire, 0.0)
    assert e.value.reason in ("auth", "epoch")
    assert recv.epoch == 1


@given(st.integers(0, 63), st.integers(1, 255))
@settings(max_examples=200, deadline=None)
def test_open_bit_flips(pos: int, xor: int) -> None:
    send = SendKeys(CHAIN, now=0.0)
    wire = bytearray(send.seal(_hdr(9), b"0123456789abcdef"))
    pos = pos if pos < 44 else 44 + (pos - 44) % 32
    wire[pos] ^= xor
    recv = RecvKeys(CHAIN)
    try:
        header, _ = frame.decode(_refix_crc(wire))
    except FrameError:
        return  # the frame layer already refuses it
    with pytest.raises(CryptoError):
        recv.open(header, _refix_crc(wire), 0.0)
