"""Frame format v1: a fixed 44-byte header, the payload, and a CRC-32 trailer.

The byte layout is specified in docs/protocol.md; keep the two in step.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from p2pmed.core.errors import FrameError

VERSION = 1
HEADER = struct.Struct(">BBBBIQQQQI")
HEADER_SIZE = HEADER.size  # 44
CRC_SIZE = 4
TAG_SIZE = 16
# Plaintext bytes one DATA frame may carry. 63 KiB keeps a frame plus its relay envelope inside
# one 64 KiB WebSocket message and aiortc's default 64 KiB DataChannel message size.
MAX_CHUNK = 63 * 1024
DEFAULT_CHUNK = 16 * 1024  # what a sender cuts messages into unless configured otherwise
MAX_PAYLOAD = MAX_CHUNK + TAG_SIZE
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MIN_FRAME = HEADER_SIZE + CRC_SIZE
U64 = (1 << 64) - 1


class FrameType(enum.IntEnum):
    DATA = 0x01
    ACK = 0x02
    PING = 0x03
    PONG = 0x04
    CLOSE = 0x05
    PATH_BIND = 0x06
    HS_COMMIT = 0x10
    HS_REPLY = 0x11
    HS_REVEAL = 0x12
    HS_CONFIRM = 0x13


HANDSHAKE_TYPES = frozenset(
    {FrameType.HS_COMMIT, FrameType.HS_REPLY, FrameType.HS_REVEAL, FrameType.HS_CONFIRM}
)


class MessageClass(enum.IntEnum):
    """Lower value is more urgent; the scheduler always drains lower values first."""

    CRITICAL = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3
    BACKGROUND = 4


NUM_CLASSES = len(MessageClass)


class Flags(enum.IntFlag):
    NONE = 0
    FIRST = 0x01  # first chunk of a message
    LAST = 0x02  # last chunk of a message
    BATCH = 0x04  # payload holds several whole messages, each u32-length-prefixed


_DEFINED_FLAGS = int(Flags.FIRST | Flags.LAST | Flags.BATCH)


@dataclass(frozen=True, slots=True)
class Header:
    type: FrameType
    flags: Flags
    cls: MessageClass
    epoch: int
    pn: int
    seq: int
    ack: int
    timestamp_us: int
    length: int

    def pack(self) -> bytes:
        return HEADER.pack(
            VERSION,
            self.type,
            self.flags,
            self.cls,
            self.epoch,
            self.pn,
            self.seq,
            self.ack,
            self.timestamp_us,
            self.length,
        )


def crc32(data: bytes | memoryview) -> int:
    """CRC-32/ISO-HDLC (the zlib/Ethernet CRC); check value 0xCBF43926."""
    return zlib.crc32(data) & 0xFFFFFFFF


def encode(header: Header, payload: bytes) -> bytes:
    """Serialise a frame. `header.length` must equal len(payload)."""
    if header.length != len(payload):
        raise ValueError("header length does not match payload")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too large for one frame")
    body = header.pack() + payload
    return body + crc32(body).to_bytes(4, "big")


def decode(data: bytes | bytearray | memoryview) -> tuple[Header, bytes]:
    """Parse and CRC-check a frame. Raises FrameError with a stable `reason`."""
    n = len(data)
    if n < MIN_FRAME:
        raise FrameError("truncated", f"frame of {n} bytes is shorter than {MIN_FRAME}")
    if n > MAX_FRAME:
        raise FrameError("oversized", f"frame of {n} bytes exceeds {MAX_FRAME}")
    mv = memoryview(data)
    if crc32(mv[:-CRC_SIZE]) != int.from_bytes(mv[-CRC_SIZE:], "big"):
        raise FrameError("crc", "CRC-32 mismatch")
    version, ftype, flags, cls, epoch, pn, seq, ack, ts, length = HEADER.unpack_from(mv)
    if version != VERSION:
        raise FrameError("version", f"unsupported frame version {version}")
    if length != n - MIN_FRAME:
        raise FrameError("length", f"length field {length} != payload size {n - MIN_FRAME}")
    try:
        ftype = FrameType(ftype)
    except ValueError:
        raise FrameError("type", f"unknown frame type 0x{ftype:02x}") from None
    if cls > MessageClass.BACKGROUND:
        raise FrameError("class", f"unknown message class {cls}")
    if flags & ~_DEFINED_FLAGS:
        raise FrameError("flags", f"undefined flag bits 0x{flags:02x}")
    if (ftype in HANDSHAKE_TYPES) != (epoch == 0):
        raise FrameError("epoch", "handshake frames use epoch 0 and only they do")
    header = Header(ftype, Flags(flags), MessageClass(cls), epoch, pn, seq, ack, ts, length)
    return header, bytes(mv[HEADER_SIZE:-CRC_SIZE])
