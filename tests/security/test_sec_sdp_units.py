"""The strict SDP check (p2pmed/transport/sdp.py) against parser-confusion tricks."""

from __future__ import annotations

import pytest

from p2pmed.transport.sdp import SdpError, check_sdp

HONEST = ":".join(["A1"] * 32)
EVIL = ":".join(["EE"] * 32)


def sdp(*sections: list[str], session: list[str] | None = None, nl: str = "\r\n") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", *(session or [])]
    for i, extra in enumerate(sections):
        lines += [f"m=application {9 + i} UDP/DTLS/SCTP webrtc-datachannel", *extra]
    return nl.join(lines) + nl


def fp(value: str = HONEST, alg: str = "sha-256") -> str:
    return f"a=fingerprint:{alg} {value}"


@pytest.mark.parametrize(
    "text",
    [
        sdp([fp()]),
        sdp([fp()], nl="\n"),  # LF only is fine
        sdp([fp()], [fp()]),
        sdp([fp(HONEST.lower())], [fp(HONEST)]),  # hex case does not matter
        sdp([fp(), fp()]),  # a duplicate of the same value
        sdp([], [], session=[fp()]),  # session level only
        sdp([fp()], session=[fp()]),
        sdp([fp(), fp(EVIL[:59], "sha-1")]),  # other hash functions are ignored
        sdp([fp(), fp(":".join(["EE"] * 64), "sha-512")]),
        sdp([fp(), fp(":".join(["EE"] * 64), "SHA-512")]),
        sdp([fp(alg="SHA-256")]),
    ],
)
def test_accepted(text: str) -> None:
    check_sdp(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # the reported attack: the attacker's line joined to the previous one with a lone CR
        (sdp([fp(), "a=mid:0\r" + fp(EVIL)]), "sdp-line-break"),
        (sdp(["a=mid:0\r" + fp(EVIL)], [fp()]), "sdp-line-break"),
        (sdp([fp()]).replace("\r\n", "\r"), "sdp-line-break"),
        (sdp([fp(), "a=mid:0\x0b" + fp(EVIL)]), "sdp-line-break"),
        (sdp([fp(), "a=mid:0\u2028" + fp(EVIL)]), "sdp-line-break"),
        (sdp([fp()], [fp(EVIL)]), "sdp-fingerprint"),  # media sections disagree
        (sdp([fp(EVIL)], session=[fp()]), "sdp-fingerprint"),  # session vs media level
        (sdp([fp(), fp(EVIL)]), "sdp-fingerprint"),  # two in one section
        (sdp([fp(EVIL[:59], "sha-1")]), "sdp-fingerprint"),  # no sha-256 at all
        (sdp([fp()], ["a=mid:1"]), "sdp-fingerprint"),  # a section without one
        (sdp([fp("A1:B2")]), "sdp-fingerprint"),  # malformed
        (sdp([fp("ZZ" + HONEST[2:])]), "sdp-fingerprint"),
        (sdp(["a=fingerprint:sha-256"]), "sdp-fingerprint"),
        ("", "sdp-empty"),
    ],
)
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(SdpError) as info:
        check_sdp(text)
    assert info.value.reason == reason
