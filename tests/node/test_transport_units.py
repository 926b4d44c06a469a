"""Pure pieces of the transport layer: relay envelope, SDP fingerprints, channel mapping,
path grading and backoff."""

from __future__ import annotations

import pytest

from p2pmed.core.errors import FrameError
from p2pmed.core.frame import MAX_FRAME, Flags, FrameType, Header, MessageClass, decode, encode
from p2pmed.transport.datachannel import CHANNELS, channel_for
from p2pmed.transport.paths import Backoff, QualityThresholds, classify
from p2pmed.transport.relay import EnvelopeError, RelayPath, decode_envelope, encode_envelope


def frame(ftype: FrameType, cls: MessageClass, epoch: int = 1) -> bytes:
    payload = b"x" * 20
    return encode(Header(ftype, Flags.NONE, cls, epoch, 1, 0, 0, 0, len(payload)), payload)


def test_envelope_round_trip() -> None:
    f = frame(FrameType.DATA, MessageClass.MEDIUM)
    env = encode_envelope("peer-1", f)
    assert env[0] == 6 and env[1:7] == b"peer-1"
    assert decode_envelope(env) == ("peer-1", f)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "envelope"),
        (b"\x00abc", "envelope"),
        (b"\x05ab", "envelope"),
        (b"\x02\xff\xfe" + b"f" * 50, "envelope"),
        (b"\x03a b" + b"f" * 50, "envelope"),
    ],
)
def test_envelope_rejects_hostile_input(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(data)
    assert info.value.reason == reason


def test_oversized_relayed_frame_reaches_the_core_which_rejects_it() -> None:
    for size in (MAX_FRAME + 1, 65_000):
        peer, data = decode_envelope(b"\x01a" + b"f" * size)
        assert peer == "a" and len(data) == size
        with pytest.raises(FrameError) as info:
            decode(data)
        assert info.value.reason == "oversized"


def test_envelope_refuses_bad_destination() -> None:
    with pytest.raises(ValueError):
        encode_envelope("bad id", b"x")
    with pytest.raises(ValueError):
        encode_envelope("x" * 65, b"x")


def test_relay_path_drops_when_socket_refuses_and_rate_limits() -> None:
    out: list[bytes] = []
    accept = [True]
    path = RelayPath("p", lambda b: accept[0] and (out.append(b) or True), rate=1.0, burst=3)
    for _ in range(5):
        path.send(b"frame")
    assert path.sent == 3 and path.dropped == 2  # burst of 3, then the bucket is empty
    assert out[0] == b"\x01pframe"
    accept[0] = False
    path._tokens = 3
    path.send(b"frame")
    assert path.dropped == 3


def test_channel_mapping() -> None:
    assert [c for c in CHANNELS] == [("control", 0), ("vitals", 1), ("bulk", 2)]
    assert channel_for(frame(FrameType.DATA, MessageClass.CRITICAL)) == 0
    assert channel_for(frame(FrameType.DATA, MessageClass.HIGH)) == 0
    assert channel_for(frame(FrameType.DATA, MessageClass.MEDIUM)) == 1
    assert channel_for(frame(FrameType.DATA, MessageClass.LOW)) == 2
    assert channel_for(frame(FrameType.DATA, MessageClass.BACKGROUND)) == 2
    for t in (FrameType.ACK, FrameType.PING, FrameType.PONG, FrameType.PATH_BIND):
        assert channel_for(frame(t, MessageClass.BACKGROUND)) == 0
    assert channel_for(frame(FrameType.HS_COMMIT, MessageClass.CRITICAL, epoch=0)) == 0


@pytest.mark.parametrize(
    ("rtt", "loss", "grade"),
    [
        (0.01, 0.0, "normal"),
        (0.2, 0.01, "normal"),
        (0.21, 0.0, "mild"),
        (0.01, 0.02, "mild"),
        (0.6, 0.0, "moderate"),
        (0.01, 0.06, "moderate"),
        (1.5, 0.0, "severe"),
        (0.01, 0.2, "severe"),
        (0.3, 0.2, "severe"),
    ],
)
def test_classify(rtt: float, loss: float, grade: str) -> None:
    assert classify(rtt, loss) == grade


def test_thresholds_configurable_and_validated() -> None:
    th = QualityThresholds(loss=(0.1, 0.2, 0.3), latency=(0.05, 0.1, 0.2))
    assert classify(0.06, 0.0, th) == "mild"
    with pytest.raises(ValueError):
        QualityThresholds(loss=(0.1, 0.05, 0.3))
    with pytest.raises(ValueError):
        QualityThresholds(latency=(0.1, 0.2))  # type: ignore[arg-type]


def test_backoff_grows_to_a_cap_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=4.0)
    delays = [b.next() for _ in range(8)]
    assert delays[0] <= 0.5 * 1.25 and delays[-1] <= 4.0 * 1.25
    assert delays[4] >= 4.0 * 0.75
    b.reset()
    assert b.next() <= 0.5 * 1.25
