"""Blind relay: frames built by the core arrive byte-identical and in order; backpressure."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from p2pmed.core import frame
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.frame import FrameType, Header, MessageClass
from signaling.config import Limits
from signaling.testing import running_server
from tests.signaling.conftest import Harness, settle


def envelope(peer: str, data: bytes) -> bytes:
    pid = peer.encode()
    return bytes([len(pid)]) + pid + data


def sealed_frames(n: int, size: int, chain: bytes) -> list[bytes]:
    keys = SendKeys(chain, now=0.0)
    out = []
    for i in range(n):
        h = Header(
            FrameType.DATA,
            frame.Flags.FIRST | frame.Flags.LAST,
            MessageClass.HIGH,
            1,
            i,
            i,
            0,
            int(time.time() * 1e6),
            0,
        )
        out.append(keys.seal(h, os.urandom(size)))
    return out


async def test_sealed_frames_relayed_identical_and_in_order(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    chain = os.urandom(32)
    frames = sealed_frames(200, 700, chain)
    for f in frames:
        await pat.ws.send_bytes(envelope("doc0", f))
    recv = RecvKeys(chain)
    for i, f in enumerate(frames):
        got = await doc.recv_bytes()
        assert got[0] == 3 and got[1:4] == b"pat"  # the server names the source
        assert got[4:] == f
        header, _ = frame.decode(got[4:])
        assert header.pn == i
        recv.open(header, got[4:], now=0.0)  # still authenticates end to end
    # and the other way, plaintext handshake frames too
    hs = frame.encode(
        Header(FrameType.HS_COMMIT, frame.Flags.NONE, MessageClass.CRITICAL, 0, 0, 0, 0, 0, 32),
        b"c" * 32,
    )
    await doc.ws.send_bytes(envelope("pat", hs))
    assert await pat.recv_bytes() == envelope("doc0", hs)
    assert h.srv.metric("p2pmed_relay_frames_total") == 201
    audit = (h.srv.config.data_dir / "audit.jsonl").read_text()
    assert audit.count('"event":"relay-start"') == 2


async def test_relay_errors(h: Harness) -> None:
    pat, (_doc,) = await h.consult()
    await pat.ws.send_bytes(b"\x00" + b"x" * 60)
    assert (await pat.recv())["code"] == "bad-envelope"
    await pat.ws.send_bytes(b"\x09doc0")
    assert (await pat.recv())["code"] == "bad-envelope"
    await pat.ws.send_bytes(envelope("nobody", b"x" * 60))
    assert await pat.recv() == {
        "type": "error",
        "code": "unknown-peer",
        "message": "relay destination not in session",
        "to": "nobody",
    }
    await pat.ws.send_bytes(envelope("pat", b"x" * 60))
    assert (await pat.recv())["code"] == "unknown-peer"
    assert h.srv.metric("p2pmed_relay_rejected_total", reason="envelope") == 2
    assert h.srv.metric("p2pmed_relay_rejected_total", reason="unknown-peer") == 2


async def test_relay_needs_admission(h: Harness) -> None:
    pat, _ = await h.join("s1", "patient", "pat")
    doc, _ = await h.join("s1", "clinician", "doc")
    await pat.ws.send_bytes(envelope("doc", b"x" * 60))
    assert (await pat.recv())["code"] == "not-admitted"
    await doc.ws.send_bytes(envelope("pat", b"x" * 60))
    assert (await doc.recv_type("error"))["code"] == "not-admitted"


async def test_relay_between_clinicians_before_patient(h: Harness) -> None:
    a, _ = await h.join("s1", "clinician", "a")
    b, _ = await h.join("s1", "clinician", "b")
    await a.ws.send_bytes(envelope("b", b"y" * 60))
    assert await b.recv_bytes() == envelope("a", b"y" * 60)


async def test_backpressure_holds_sender_and_loses_nothing(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    limits = Limits(queue_frames=8, queue_bytes=1 << 20)
    async with running_server(tmp_path, limits=limits) as srv:
        h = Harness(srv, http)
        pat, (doc,) = await h.consult()
        frames = [
            frame.encode(
                Header(
                    FrameType.DATA,
                    frame.Flags.FIRST | frame.Flags.LAST,
                    MessageClass.LOW,
                    1,
                    i,
                    i,
                    0,
                    0,
                    16000,
                ),
                os.urandom(16000),
            )
            for i in range(600)
        ]
        paused: list[bool] = []

        async def send_all() -> None:
            for f in frames:
                await pat.ws.send_bytes(envelope("doc0", f))

        async def watch_sender() -> None:
            while True:
                m = await pat.recv()
                if m["type"] == "backpressure":
                    assert m["to"] == "doc0"
                    paused.append(m["paused"])

        sender = asyncio.create_task(send_all())
        watcher = asyncio.create_task(watch_sender())
        # the receiver does not read: the queue fills and the sender is paused
        await settle(lambda: True in paused)
        assert srv.metric("p2pmed_relay_backpressure_total") >= 1
        relayed = srv.metric("p2pmed_relay_frames_total")
        assert relayed < len(frames)
        # now the receiver reads everything: all frames, identical, in order
        for f in frames:
            assert (await doc.recv_bytes())[4:] == f
            assert srv.metric("p2pmed_relay_queue_max_frames") <= 8  # the bound holds
        await asyncio.wait_for(sender, 10)
        # every pause was followed by a resume
        await settle(lambda: paused[-1] is False)
        watcher.cancel()
        assert paused == [True, False] * (len(paused) // 2)
        assert srv.metric("p2pmed_relay_frames_total") == len(frames)


async def test_frames_for_reconnecting_endpoint_are_kept(h: Harness) -> None:
    pat, (doc,) = await h.consult()
    await doc.ws.close()
    await settle(lambda: h.srv.hub.endpoint("s1", "doc0").ws is None)
    for i in range(5):
        await pat.ws.send_bytes(envelope("doc0", bytes([i]) * 60))
    await settle(lambda: h.srv.hub.endpoint("s1", "doc0").qframes == 5)
    doc2, _joined = await h.join("s1", "clinician", "doc0")
    for i in range(5):
        assert await doc2.recv_bytes() == envelope("pat", bytes([i]) * 60)


async def test_held_sender_told_when_destination_leaves(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, limits=Limits(queue_frames=4)) as srv:
        h = Harness(srv, http)
        pat, (doc,) = await h.consult()
        frame_ = os.urandom(16000)

        async def flood() -> None:
            for _ in range(2000):
                if pat.ws.closed:
                    return
                await pat.ws.send_bytes(envelope("doc0", frame_))

        sender = asyncio.create_task(flood())
        assert (await pat.recv_type("backpressure"))["paused"] is True
        await doc.send(type="leave")
        err = await pat.recv_type("error")
        assert err["code"] == "unknown-peer" and err["to"] == "doc0"
        assert srv.metric("p2pmed_relay_rejected_total", reason="peer-gone") == 1
        sender.cancel()


async def test_frame_sizes_across_websocket_length_encodings(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # 7-bit, 16-bit and 64-bit WebSocket payload lengths on the server-to-client side
    async with running_server(tmp_path, limits=Limits(max_msg_size=300_000)) as srv:
        pat, (doc,) = await Harness(srv, http).consult()
        sizes = [1, 121, 122, 125, 126, 65530, 65531, 65532, 200_000]
        blobs = [os.urandom(n) for n in sizes]
        for b in blobs:
            await pat.ws.send_bytes(envelope("doc0", b))
        for b in blobs:
            assert await doc.recv_bytes() == envelope("pat", b)
