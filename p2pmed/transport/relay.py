"""WebSocket relay path: session frames inside the relay envelope (docs/protocol.md section 5).

The envelope is `u8 n || endpoint id (n bytes, UTF-8) || frame`. To the server the id names the
destination; from the server it names the source. The relay path only moves bytes: sequence
numbers, acks and retransmits live in the session core.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from p2pmed.core.errors import ProtocolError

ENDPOINT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EnvelopeError(ProtocolError):
    """A relay envelope that cannot be parsed."""


def encode_envelope(endpoint_id: str, frame: bytes) -> bytes:
    if not ENDPOINT_ID.match(endpoint_id):
        raise ValueError(f"invalid endpoint id {endpoint_id!r}")
    raw = endpoint_id.encode()
    return bytes([len(raw)]) + raw + frame


def decode_envelope(data: bytes) -> tuple[str, bytes]:
    """Split an envelope into (endpoint id, frame). Raises EnvelopeError on malformed input."""
    if len(data) < 2:
        raise EnvelopeError("envelope", "relay envelope too short")
    n = data[0]
    if n == 0 or len(data) < 1 + n:
        raise EnvelopeError("envelope", "relay envelope id length out of range")
    try:
        endpoint_id = data[1 : 1 + n].decode()
    except UnicodeDecodeError:
        raise EnvelopeError("envelope", "relay envelope id is not UTF-8") from None
    if not ENDPOINT_ID.match(endpoint_id):
        raise EnvelopeError("envelope", "relay envelope id has invalid characters")
    # the frame itself, whatever its size, goes to the session core, which rejects a bad one
    # with a reason (FrameRejected) instead of it vanishing here
    return endpoint_id, data[1 + n :]


class RelayPath:
    """Sends one peer's frames through the signaling WebSocket (fire and forget)."""

    path_id = "relay"

    def __init__(
        self,
        peer_id: str,
        send_binary: Callable[[bytes], bool],
        *,
        rate: float = 10_000.0,
        burst: float = 2_000.0,
    ) -> None:
        self.peer_id = peer_id
        self._send_binary = send_binary
        # stay under the server's per-endpoint relay rate limit (it closes the socket above it)
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = time.monotonic()
        self.sent = 0
        self.dropped = 0

    def send(self, frame: bytes) -> None:
        # A frame that cannot go out now is simply dropped: the session retransmits it.
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            self.dropped += 1
            return
        self._tokens -= 1.0
        if self._send_binary(encode_envelope(self.peer_id, frame)):
            self.sent += 1
        else:
            self.dropped += 1
