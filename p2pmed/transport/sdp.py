"""Strict check of a peer's SDP before it reaches aiortc (docs/protocol.md, direct paths).

Security never rests on a fingerprint parsed here: a direct path is bound by PATH_BIND to the
certificate the DTLS handshake verified. This check refuses SDP that different parsers could
read differently, so that what aiortc verifies is the one fingerprint a reader of the text sees:
  - a line break other than CRLF or LF (aiortc's str.splitlines() also splits on a lone CR,
    VT, FF, and Unicode separators; a `\\n`-based reader would not),
  - `a=fingerprint` lines that disagree between the session level and the media sections,
    or between media sections, or more than one distinct sha-256 fingerprint,
  - no sha-256 fingerprint, or a malformed one.
Hex is compared case-insensitively. Fingerprints with other hash functions are never used.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$")
# every character str.splitlines() breaks on, apart from \n
_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class SdpError(ValueError):
    """An SDP refused by check_sdp; `reason` is a stable metrics label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_sdp(sdp: str) -> None:
    """Raise SdpError unless `sdp` has unambiguous line breaks and one sha-256 fingerprint."""
    if not isinstance(sdp, str) or not sdp:
        raise SdpError("sdp-empty", "SDP is empty")
    if _BREAKS.search(sdp):
        raise SdpError("sdp-line-break", "SDP has a line break other than CRLF or LF")
    levels: list[set[str]] = [set()]  # sha-256 values: session level, then one per m= section
    for raw in sdp.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("m="):
            levels.append(set())
        elif line.startswith("a=fingerprint:"):
            parts = line[len("a=fingerprint:") :].split()
            if len(parts) != 2:
                raise SdpError("sdp-fingerprint", f"malformed fingerprint line {line!r}")
            algorithm, value = parts[0].lower(), parts[1]
            if algorithm != "sha-256":
                continue  # other hash functions are never trusted for binding
            if not _HEX.match(value):
                raise SdpError("sdp-fingerprint", "malformed sha-256 fingerprint")
            levels[-1].add(value.upper())
    found = set().union(*levels)
    if not found:
        raise SdpError("sdp-fingerprint", "SDP has no sha-256 fingerprint")
    if len(found) > 1:
        raise SdpError("sdp-fingerprint", "SDP has more than one distinct sha-256 fingerprint")
    session, media = levels[0], levels[1:]
    if not session and any(not section for section in media):
        raise SdpError("sdp-fingerprint", "a media section has no sha-256 fingerprint")
