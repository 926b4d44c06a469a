"""SDP variants a signaling server may produce, through real nodes (real aiortc): each is either
refused before use (counted) or leads to a path bound to what DTLS verified; never to a path
bound on a fingerprint that DTLS did not check."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.node.conftest import start_inproc
from tests.security.hostile_proxy import HostileProxy

FP = re.compile(r"a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\r\n")
EVIL = ":".join(["EE"] * 32)


def lower(sdp: str) -> str:
    return FP.sub(lambda m: f"a=fingerprint:sha-256 {m.group(1).lower()}\r\n", sdp)


def duplicate(sdp: str) -> str:
    return FP.sub(lambda m: m.group(0) * 2, sdp)


def session_level(sdp: str) -> str:
    value = FP.search(sdp).group(1)  # type: ignore[union-attr]
    body = FP.sub("", sdp)
    head, sep, rest = body.partition("m=")
    return f"{head}a=fingerprint:sha-256 {value}\r\n{sep}{rest}"


def other_in_second_section(sdp: str) -> str:
    matches = list(FP.finditer(sdp))
    m = matches[1]
    return sdp[: m.start()] + f"a=fingerprint:sha-256 {EVIL}\r\n" + sdp[m.end() :]


def sha1_only(sdp: str) -> str:
    return FP.sub("a=fingerprint:sha-1 " + ":".join(["AB"] * 20) + "\r\n", sdp)


def extra_sha512(sdp: str) -> str:
    return FP.sub(lambda m: m.group(0) + "a=fingerprint:sha-512 " + EVIL * 2 + "\r\n", sdp)


@pytest.fixture
async def proxy(server) -> AsyncIterator[HostileProxy]:  # type: ignore[no-untyped-def]
    p = HostileProxy(server.ws_url)
    await p.start()
    yield p
    await p.close()


def _on_delivery(change: Callable[[str], str]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    def rewrite(_src: str, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("type") in ("offer", "answer") and "from" in msg:
            msg = dict(msg, sdp=change(msg["sdp"]))
        return msg

    return rewrite


@pytest.mark.parametrize("change", [lower, duplicate, session_level])
async def test_equivalent_sdp_binds(server, proxy, change) -> None:  # type: ignore[no-untyped-def]
    proxy.rewrite = _on_delivery(change)
    patient = await start_inproc(
        proxy.join_url(server.mint("s1", "patient")), "patient", media="testpattern"
    )
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await patient.w.wait_for("direct-bound")
        await clinician.w.wait_for("direct-bound")
        await clinician.w.wait_for("message", path="direct")
        assert not patient.w.of("rejected", kind="sdp") and not clinician.w.of("rejected")
    finally:
        await clinician.stop()
        await patient.stop()


@pytest.mark.parametrize(
    ("change", "reason"),
    [(other_in_second_section, "sdp-fingerprint"), (sha1_only, "sdp-fingerprint")],
)
async def test_ambiguous_sdp_is_refused(server, proxy, change, reason) -> None:  # type: ignore[no-untyped-def]
    proxy.rewrite = _on_delivery(change)
    patient = await start_inproc(
        proxy.join_url(server.mint("s1", "patient")), "patient", media="testpattern"
    )
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("rejected", kind="sdp", reason=reason)
        await clinician.w.wait_count("message", 5)  # the session itself runs on the relay
        assert not patient.w.of("direct-bound") and not clinician.w.of("direct-open")
        assert clinician.node.rejected[f"sdp/{reason}"] >= 1
    finally:
        await clinician.stop()
        await patient.stop()


async def test_unchecked_other_hash_never_binds_a_path(server, proxy) -> None:  # type: ignore[no-untyped-def]
    """A sha-512 line the SDP check ignores: aiortc checks it against the certificate and
    refuses DTLS, so no direct path opens; nothing is bound on it and no alarm is raised."""
    proxy.rewrite = _on_delivery(extra_sha512)
    patient = await start_inproc(proxy.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await patient.w.wait_for("direct-failed")
        await clinician.w.wait_count("message", 5)
        assert not patient.w.of("direct-bound") and not clinician.w.of("direct-bound")
        assert not patient.w.of("technical-alarm") and not clinician.w.of("technical-alarm")
    finally:
        await clinician.stop()
        await patient.stop()
