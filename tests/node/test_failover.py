"""The direct path dies mid-stream: traffic moves to the relay with nothing lost, duplicated
or reordered, and returns to a freshly negotiated direct path."""

from __future__ import annotations

from tests.node.conftest import check_stream, start_inproc


async def test_direct_path_killed_then_restored(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")), "patient", reconnect_initial=1.0
    )
    clinician = await start_inproc(server.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("path", active="direct")
        await clinician.w.wait_count("message", 20, kind="waveform")
        link = patient.node.peers[clinician.node.endpoint_id]
        first_pc = link.direct
        assert first_pc is not None
        mark = len(clinician.w.events)
        await link.cut_direct()  # the RTCPeerConnection is closed under the running session
        await patient.w.wait_for("path", active="relay")
        await clinician.w.wait_for("path", active="relay", after=mark)
        relayed = await clinician.w.wait_for("message", path="relay", after=mark)
        assert relayed["kind"] in ("waveform", "numerics")
        # a new peer connection is negotiated in the background and traffic moves back
        await patient.w.wait_for("direct-open", generation=2)
        back = await clinician.w.wait_for("path", active="direct", after=mark)
        n = len(clinician.w.events)
        await clinician.w.wait_for("message", path="direct", after=n)
        assert link.direct is not None and link.direct is not first_pc
        assert back
        # frames still in flight when a side stops are rejected once its session closed
        # (kind "state", counted): only rejections up to here concern the failover
        rejected = clinician.w.of("rejected") + patient.w.of("rejected")
    finally:
        await patient.stop()
        await clinician.stop()
    check_stream(patient.w.of("sent", peer=clinician.node.endpoint_id), clinician.w.of("message"))
    assert not clinician.w.of("waveform-gap")
    assert not rejected
