"""DirectPath over two real aiortc peer connections on loopback."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection

from p2pmed.core.frame import Flags, FrameType, Header, MessageClass, encode
from p2pmed.transport.datachannel import DirectPath, dtls_fingerprints, own_certificate_fp


def data_frame(cls: MessageClass, pn: int, size: int) -> bytes:
    payload = pn.to_bytes(8, "big") + bytes(size - 8)
    return encode(
        Header(FrameType.DATA, Flags.FIRST | Flags.LAST, cls, 1, pn, pn, 0, 0, size), payload
    )


async def connected_pair(
    rejected: list[str] | None = None,
) -> tuple[DirectPath, DirectPath, list[tuple[int, bytes]], list[str]]:
    got: list[tuple[int, bytes]] = []
    closed: list[str] = []
    opened = asyncio.Event()
    count = [0]

    def on_open() -> None:
        count[0] += 1
        if count[0] == 2:
            opened.set()

    a = DirectPath(
        RTCPeerConnection(), on_frame=lambda f: None, on_open=on_open, on_closed=closed.append
    )
    b = DirectPath(
        RTCPeerConnection(),
        on_frame=lambda f: got.append((0, f)),
        on_open=on_open,
        on_closed=closed.append,
        on_rejected=None if rejected is None else rejected.append,
    )
    a.open_channels()
    await a.pc.setLocalDescription(await a.pc.createOffer())
    await b.pc.setRemoteDescription(a.pc.localDescription)
    b.open_channels()
    await b.pc.setLocalDescription(await b.pc.createAnswer())
    await a.pc.setRemoteDescription(b.pc.localDescription)
    await asyncio.wait_for(opened.wait(), 20)
    return a, b, got, closed


async def test_frames_flow_and_critical_overtakes_queued_bulk() -> None:
    a, b, got, closed = await connected_pair()
    try:
        # what each side's DTLS verified: its own certificate and the other's, crosswise
        fa, fb = dtls_fingerprints(a.pc), dtls_fingerprints(b.pc)
        assert fa == (own_certificate_fp(a.pc), own_certificate_fp(b.pc))
        assert fb == (fa[1], fa[0]) and fa[0] != fa[1]
        labels = {}
        for ch in b.channels:
            ch.on("message", lambda data, label=ch.label: labels.setdefault(data[16:24], label))
        bulk = [data_frame(MessageClass.LOW, pn, 16000) for pn in range(1, 201)]
        for f in bulk:
            a.send(f)
        assert a.queued > 150  # the adapter, not aiortc, holds the backlog
        assert a.buffered <= a.high_water + 16448
        alarm = data_frame(MessageClass.CRITICAL, 999, 100)
        a.send(alarm)
        vit = data_frame(MessageClass.MEDIUM, 1000, 100)
        a.send(vit)
        for _ in range(400):
            if len(got) == 202:
                break
            await asyncio.sleep(0.05)
        frames = [f for _, f in got]
        assert sorted(frames) == sorted([*bulk, alarm, vit])  # nothing lost, nothing duplicated
        assert frames.index(alarm) < 10  # only what was already handed to aiortc went first
        assert frames.index(alarm) < frames.index(vit)
        bulk_order = [f for f in frames if f in set(bulk)]
        assert bulk_order == bulk  # one class keeps its order
        assert labels[(999).to_bytes(8, "big")] == "control"
        assert labels[(1000).to_bytes(8, "big")] == "vitals"
        assert labels[(5).to_bytes(8, "big")] == "bulk"
        assert closed == []
    finally:
        await a.close()
        await b.close()
    assert "closed locally" in closed


async def test_remote_close_is_reported() -> None:
    a, b, _got, closed = await connected_pair()
    await a.pc.close()
    for _ in range(200):
        if len(closed) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(closed) == 2  # a: local close; b: its channels closed by the peer
    a.send(data_frame(MessageClass.CRITICAL, 1, 100))  # sending on a closed path is a no-op
    assert a.queued == 0
    await b.close()


async def test_text_message_is_reported_not_dropped_silently() -> None:
    rejected: list[str] = []
    a, b, got, _closed = await connected_pair(rejected)
    try:
        a.channels[0].send("not a frame")
        a.send(data_frame(MessageClass.CRITICAL, 1, 100))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        assert rejected == ["text"] and len(got) == 1
    finally:
        await a.close()
        await b.close()
