import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmed.core import frame
from p2pmed.core.errors import FrameError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass


def _header(payload: bytes, **kw: object) -> Header:
    fields: dict[str, object] = dict(
        type=FrameType.DATA,
        flags=Flags.FIRST | Flags.LAST,
        cls=MessageClass.HIGH,
        epoch=1,
        pn=7,
        seq=3,
        ack=2,
        timestamp_us=1_700_000_000_000_000,
        length=len(payload),
    )
    fields.update(kw)
    return Header(**fields)  # type: ignore[arg-type]


def test_crc_check_value() -> None:
    assert frame.crc32(b"123456789") == 0xCBF43926


def test_roundtrip() -> None:
    payload = b"hello vitals"
    data = frame.encode(_header(payload), payload)
    assert len(data) == frame.HEADER_SIZE + len(payload) + frame.CRC_SIZE
    header, body = frame.decode(data)
    assert header == _header(payload)
    assert body == payload


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b + bytes(frame.MAX_FRAME), "oversized"),
    ],
)
def test_size_errors(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    data = frame.encode(_header(b"x"), b"x")
    with pytest.raises(FrameError) as e:
        frame.decode(mutate(data))
    assert e.value.reason == reason


def _refix_crc(body: bytes) -> bytes:
    return body + frame.crc32(body).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [(0, 2, "version"), (1, 0x7F, "type"), (2, 0x80, "flags"), (3, 9, "class")],
)
def test_field_errors(offset: int, value: int, reason: str) -> None:
    data = bytearray(frame.encode(_header(b"abc"), b"abc"))
    data[offset] = value
    with pytest.raises(FrameError) as e:
        frame.decode(_refix_crc(bytes(data[:-4])))
    assert e.value.reason == reason


def test_length_and_epoch_errors() -> None:
    bad_len = bytearray(frame.encode(_header(b"abc"), b"abc"))
    bad_len[43] = 9
    with pytest.raises(FrameError) as e:
        frame.decode(_refix_crc(bytes(bad_len[:-4])))
    assert e.value.reason == "length"
    hs = frame.encode(_header(b"", type=FrameType.HS_COMMIT, epoch=1), b"")
    with pytest.raises(FrameError) as e:
        frame.decode(hs)
    assert e.value.reason == "epoch"


@given(st.binary(max_size=256), st.integers(min_value=0))
def test_any_single_bit_flip_is_detected(payload: bytes, bit: int) -> None:
    data = bytearray(frame.encode(_header(payload), payload))
    bit %= len(data) * 8
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        frame.decode(bytes(data))


@given(st.binary(max_size=frame.MAX_FRAME + 10))
def test_random_bytes_never_escape(data: bytes) -> None:
    try:
        frame.decode(data)
    except FrameError as e:
        assert e.reason
