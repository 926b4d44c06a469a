"""Direct path: one aiortc RTCPeerConnection and its three DataChannels.

Channels are created by both sides with `negotiated=True` and fixed stream ids, so neither side
waits for the other's DCEP open message and the browser page creates them the same way:

    id 0 "control"  handshake, ACK, PING/PONG, CLOSE, PATH_BIND and DATA of class CRITICAL/HIGH
    id 1 "vitals"   DATA of class MEDIUM
    id 2 "bulk"     DATA of class LOW/BACKGROUND

All three are ordered and reliable. A receiver accepts any frame on any channel: the session core
orders by seq, so the mapping only decides which SCTP stream carries the bytes.

aiortc pushes every channel's messages through one FIFO with no backpressure. This adapter keeps
frames in its own per-class lanes and hands them to aiortc only while the total bufferedAmount
is below `high_water`; `bufferedamountlow` refills. So a CRITICAL frame queued during a bulk
transfer overtakes everything not yet handed to aiortc, and waits behind at most `high_water`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcsctptransport import USERDATA_MAX_LENGTH
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from p2pmed.core.frame import FrameType, MessageClass

FRAME_OVERHEAD = 64  # header 44 + GCM tag 16 + CRC 4
# Chunk size for the node: frames of at most 32 KiB that fill whole SCTP DATA chunks. aiortc
# cuts a message into pieces of USERDATA_MAX_LENGTH (1160) bytes and costs about the same per
# packet and per message whatever their size, so 16 KiB chunks (16448-byte frames: 15 packets
# where 14.2 would do) left bulk at 0.66x bare aiortc. 32 KiB did as well as 63 KiB in
# bench/node_bench.py, and a CRITICAL frame waits behind less.
SCTP_CHUNK = 32 * 1024 // USERDATA_MAX_LENGTH * USERDATA_MAX_LENGTH - FRAME_OVERHEAD

log = logging.getLogger("p2pmed.transport.datachannel")

CHANNELS: tuple[tuple[str, int], ...] = (("control", 0), ("vitals", 1), ("bulk", 2))
_LANES = 6  # 0: non-DATA frames, 1..5: DATA by class CRITICAL..BACKGROUND


def channel_for(frame: bytes) -> int:
    """Stream id for a frame, read from its header (type at byte 1, class at byte 3)."""
    if frame[1] != FrameType.DATA:
        return 0
    cls = frame[3]
    if cls <= MessageClass.HIGH:
        return 0
    if cls == MessageClass.MEDIUM:
        return 1
    return 2


def _lane(frame: bytes) -> int:
    return 0 if frame[1] != FrameType.DATA else 1 + min(frame[3], 4)


def _sha256(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def own_certificate_fp(pc: RTCPeerConnection) -> bytes:
    """SHA-256 of the DER of the DTLS certificate this peer connection presents (aiortc makes
    one per RTCPeerConnection; it has no public accessor for it)."""
    return _sha256(pc._RTCPeerConnection__certificates[0]._cert)  # type: ignore[attr-defined]


def dtls_fingerprints(pc: RTCPeerConnection) -> tuple[bytes, bytes]:
    """(own certificate, peer certificate) SHA-256 fingerprints as the completed DTLS
    handshakes verified them, read from the DTLS transports themselves (never from SDP).
    ValueError unless every DTLS transport of `pc` is connected and all agree (an unbundled
    media transport with another certificate would otherwise escape the binding)."""
    transports = list(pc._RTCPeerConnection__dtlsTransports)  # type: ignore[attr-defined]
    pairs = set()
    for t in transports:
        ssl = t._ssl
        if t.state != "connected" or ssl is None:
            raise ValueError(f"DTLS transport is {t.state}, not connected")
        peer = ssl.get_peer_certificate(as_cryptography=True)
        if peer is None:
            raise ValueError("DTLS transport has no peer certificate")
        own = t._RTCDtlsTransport__local_certificate._cert
        pairs.add((_sha256(own), _sha256(peer)))
    if len(pairs) != 1:
        raise ValueError(f"{len(pairs)} distinct DTLS certificate pairs in one connection")
    return pairs.pop()


class DirectPath:
    """Moves frames over one peer connection's DataChannels (call open_channels() once)."""

    path_id = "direct"

    def __init__(
        self,
        pc: RTCPeerConnection,
        *,
        on_frame: Callable[[bytes], None],
        on_open: Callable[[], None],
        on_closed: Callable[[str], None],
        high_water: int = 64 * 1024,
        low_water: int = 16 * 1024,
        on_rejected: Callable[[str], None] | None = None,
    ) -> None:
        self.pc = pc
        self._on_frame = on_frame
        self._on_rejected = on_rejected  # a message that is not a frame, with a reason
        self._on_open = on_open
        self._on_closed = on_closed
        self.high_water = high_water
        self.low_water = low_water
        self.channels: list[RTCDataChannel] = []
        self._lanes: list[deque[bytes]] = [deque() for _ in range(_LANES)]
        self._queued = 0
        self.is_open = False
        self.closed = False
        self.sent = 0
        self.received = 0
        # certificate fingerprints as DTLS verified them, once connected (None before)
        self.local_fp: bytes | None = None
        self.remote_fp: bytes | None = None
        self.bound = False  # the peer's PATH_BIND for these certificates was verified
        self.media_sink: Any = None  # a MediaRecorder/MediaBlackhole fed by this connection
        self.held_tracks: list[Any] = []  # received tracks, not played before binding

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._lost(f"connection {pc.connectionState}")

    def open_channels(self) -> None:
        for label, sid in CHANNELS:
            ch = self.pc.createDataChannel(label, ordered=True, negotiated=True, id=sid)
            ch.bufferedAmountLowThreshold = self.low_water
            ch.on("message", self._message)
            ch.on("open", self._maybe_open)
            ch.on("close", lambda label=label: self._lost(f"channel {label} closed"))
            ch.on("bufferedamountlow", self._pump)
            self.channels.append(ch)

    def _maybe_open(self) -> None:
        if self.closed or self.is_open:
            return
        if all(ch.readyState == "open" for ch in self.channels):
            self.is_open = True
            self._on_open()
            self._pump()

    def _message(self, data: bytes | str) -> None:
        if self.closed:
            return
        self.received += 1
        if isinstance(data, bytes):
            self._on_frame(data)
        elif self._on_rejected is not None:
            self._on_rejected("text")  # frames are binary; a text message is not one

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.is_open = False
        self._drop_queued()
        self._on_closed(why)

    @property
    def buffered(self) -> int:
        return sum(ch.bufferedAmount for ch in self.channels)

    @property
    def queued(self) -> int:
        return self._queued

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        self._lanes[_lane(frame)].append(frame)
        self._queued += 1
        if self.is_open:
            self._pump()

    def _pump(self) -> None:
        if not self.is_open or self._queued == 0:
            return
        buffered = self.buffered
        channels = self.channels
        for lane in self._lanes:
            while lane and buffered < self.high_water:
                frame = lane.popleft()
                self._queued -= 1
                try:
                    channels[channel_for(frame)].send(frame)
                except Exception as exc:  # InvalidStateError while closing
                    log.debug("direct send failed: %s", exc)
                    self._lost("send failed")
                    return
                buffered += len(frame)
                self.sent += 1
            if buffered >= self.high_water:
                return

    def _drop_queued(self) -> None:
        for lane in self._lanes:
            lane.clear()
        self._queued = 0

    async def close(self) -> None:
        self._lost("closed locally")
        sink, self.media_sink = self.media_sink, None
        if sink is not None:
            try:
                await sink.stop()  # finalises a recording (e.g. writes the MP4 index)
            except Exception as exc:
                log.warning("media sink did not stop cleanly: %s", exc)
        await self.pc.close()
