"""A hostile signaling server that terminates WebRTC itself (issue #10.1).

The proxy answers the patient's offer with its own aiortc endpoint and offers another one to the
clinician, bridging their DataChannels. Both real nodes run the E2E handshake over the relay
(it passes through) and see the same SAS; what must stop the attack is the direct-path binding:
each node sends, inside the E2E session, the certificates its completed DTLS handshake verified,
and a node whose DTLS saw the attacker refuses the other's PATH_BIND. No media may reach the
attacker's tracks, since media starts only on a bound path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import p2pmed.node.peer as peer_module
from tests.node.conftest import InProcNode, start_inproc
from tests.security.hostile_proxy import HostileProxy


@pytest.fixture
async def proxy(server) -> AsyncIterator[HostileProxy]:  # type: ignore[no-untyped-def]
    p = HostileProxy(server.ws_url)
    await p.start()
    yield p
    await p.close()


async def _pair(server: Any, proxy: HostileProxy) -> tuple[InProcNode, InProcNode]:
    patient = await start_inproc(
        proxy.join_url(server.mint("s1", "patient")), "patient", media="testpattern"
    )
    clinician = await start_inproc(proxy.join_url(server.mint("s1", "clinician")), "clinician")
    return patient, clinician


def _fingerprint_refusal(node: InProcNode) -> None:
    closed = node.w.of("session-closed")
    assert closed and "fingerprint" in closed[0]["reason"], node.w.events[-20:]
    alarm = node.w.of("technical-alarm", code="fingerprint")
    assert alarm and alarm[0]["priority"] == "HIGH"


@pytest.mark.parametrize("plant", [False, True])
async def test_dtls_mitm_is_refused_and_gets_no_media(server, proxy, plant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """plant=True: the attacker also hides its fingerprints behind a lone CR and shows the
    honest ones elsewhere. The strict SDP check would refuse that SDP; it is switched off
    here to show that the binding alone defeats the attack."""
    proxy.mitm = True
    proxy.plant = plant
    if plant:
        monkeypatch.setattr(peer_module, "check_sdp", lambda sdp: None, raising=False)
    patient, clinician = await _pair(server, proxy)
    try:
        # same SAS on both sides: the E2E session itself is intact, only WebRTC is attacked
        hp = await patient.w.wait_for("handshake")
        hc = await clinician.w.wait_for("handshake")
        assert hp["sas"] == hc["sas"]
        await patient.w.wait_for("session-closed")
        await clinician.w.wait_for("session-closed")
        _fingerprint_refusal(patient)
        _fingerprint_refusal(clinician)
        rejected = patient.w.of("rejected", kind="crypto", reason="fingerprint")
        rejected += clinician.w.of("rejected", kind="crypto", reason="fingerprint")
        assert rejected  # the refused PATH_BIND is counted
        assert proxy.tracks >= 1  # the attacker did get the patient's (empty) media sections
        assert proxy.media_frames == 0
        assert not patient.w.of("direct-bound") and not clinician.w.of("direct-bound")
        # nothing was sent over the attacker's connection but encrypted control frames
        assert not [m for m in clinician.w.of("message") if m["path"] == "direct"]
    finally:
        await clinician.stop()
        await patient.stop()


async def test_lone_cr_sdp_is_refused_before_use(server, proxy) -> None:  # type: ignore[no-untyped-def]
    proxy.mitm = True
    proxy.plant = True
    patient, clinician = await _pair(server, proxy)
    try:
        await clinician.w.wait_for("rejected", kind="sdp", reason="sdp-line-break")
        await patient.w.wait_for("rejected", kind="sdp", reason="sdp-line-break")
        # the session itself runs on the relay: vitals keep coming
        await clinician.w.wait_count("message", 5)
        assert proxy.media_frames == 0
        assert not patient.w.of("direct-open") and not clinician.w.of("direct-open")
        assert clinician.node.rejected.get("sdp/sdp-line-break", 0) >= 1
    finally:
        await clinician.stop()
        await patient.stop()


async def test_honest_path_binds_then_carries_data_and_media(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")), "patient", media="testpattern"
    )
    clinician = await start_inproc(server.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        bound = await patient.w.wait_for("direct-bound")
        assert bound["tracks"] == 2  # video and audio attached only now
        assert (await clinician.w.wait_for("direct-bound"))["tracks"] == 2  # received tracks
        await clinician.w.wait_for("message", path="direct")
        ev = patient.w.events
        assert ev.index(patient.w.of("direct-open")[0]) < ev.index(bound)
        for node in (patient, clinician):
            assert not [e for e in node.w.of("rejected") if e["kind"] != "app"]
    finally:
        await clinician.stop()
        await patient.stop()
