"""p2pmed.core against the shared parsing vectors (tests/vectors/wire_v1.json): frames
(section 1), ACK payloads and the other control payloads (section 4). The page's tests
(tests/web/test_wire_vectors_js.py) check the browser implementation against the same file."""

from __future__ import annotations

from typing import Any

import pytest

from p2pmed.core import frame
from p2pmed.core.errors import FrameError
from p2pmed.core.events import FrameRejected
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.reliability import decode_ack, encode_ack
from tests.core.sessionkit import establish
from tests.core.simnet import make_pair
from tests.vectors.wire import VECTORS, expand, ids


@pytest.mark.parametrize("v", VECTORS["frames"], ids=ids("frames"))
def test_frame_vector(v: dict[str, Any]) -> None:
    data = expand(v["bytes"])
    if "error" in v:
        with pytest.raises(FrameError) as exc:
            frame.decode(data)
        assert [exc.value.kind, exc.value.reason] == v["error"], v.get("why")
        return
    header, payload = frame.decode(data)
    got = {k: int(getattr(header, k)) for k in v["header"]}
    assert got == v["header"]
    assert payload == expand(v["payload"])
    h = v["header"]
    again = Header(
        FrameType(h["type"]), Flags(h["flags"]), MessageClass(h["cls"]), h["epoch"], h["pn"],
        h["seq"], h["ack"], h["timestamp_us"], h["length"],
    )  # fmt: skip
    assert frame.encode(again, payload) == data


@pytest.mark.parametrize("v", VECTORS["acks"], ids=ids("acks"))
def test_ack_vector(v: dict[str, Any]) -> None:
    payload = bytes.fromhex(v["payload"])
    if "error" in v:
        with pytest.raises(FrameError) as exc:
            decode_ack(payload)
        assert [exc.value.kind, exc.value.reason] == v["error"], v.get("why")
        return
    largest, delay, entries = decode_ack(payload)
    want = v["ack"]
    assert (largest, delay) == (want["largest_pn"], want["ack_delay_us"])
    assert [
        {"cls": c, "cumulative": cum, "ranges": [list(r) for r in rs]} for c, cum, rs in entries
    ] == want["entries"]
    assert encode_ack(largest, delay, entries) == payload


@pytest.fixture(scope="module")
def pair() -> Any:
    net, a, b = make_pair(11)
    establish(net)
    return net, a, b


def _inject(pair: Any, ftype: int, payload: bytes) -> list[FrameRejected]:
    """Seal `payload` as a control frame of `ftype` with a's keys and feed it to b."""
    net, a, b = pair
    assert a._prot.send is not None
    wire = a._prot.send.seal(
        Header(FrameType(ftype), Flags.NONE, MessageClass.CRITICAL, 0, a._take_pn(), 0, 0, 0, 0),
        payload,
    )
    while b.next_event() is not None:
        pass
    b.receive(wire, "direct", net.now)
    return [e for e in iter(b.next_event, None) if isinstance(e, FrameRejected)]


@pytest.mark.parametrize(
    "v",
    [v for v in VECTORS["control"] if v["type"] != FrameType.CLOSE or "error" in v],
    ids=lambda v: v["name"],
)
def test_control_payload_vector(pair: Any, v: dict[str, Any]) -> None:
    rejected = _inject(pair, v["type"], bytes.fromhex(v["payload"]))
    if "error" in v:
        assert [(e.kind, e.reason) for e in rejected] == [tuple(v["error"])]
    else:
        assert rejected == []


@pytest.mark.parametrize(
    "v",
    [v for v in VECTORS["control"] if v["type"] == FrameType.CLOSE and "ok" in v],
    ids=lambda v: v["name"],
)
def test_close_payload_vector(v: dict[str, Any]) -> None:
    net, a, b = make_pair(12)
    establish(net)
    assert _inject((net, a, b), v["type"], bytes.fromhex(v["payload"])) == []
    assert b.state.value == "closed"
