"""Two real nodes stream vitals peer to peer through the session core."""

from __future__ import annotations

from tests.node.conftest import check_stream, start_inproc


async def test_two_nodes_stream_exactly_once_in_order(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s1", "patient")), "patient")
    clinician = await start_inproc(server.join_url(server.mint("s1", "clinician")), "clinician")
    try:
        hs = await clinician.w.wait_for("handshake")
        phs = await patient.w.wait_for("handshake")
        assert hs["sas"] == phs["sas"] and len(hs["sas"]) == 7
        assert hs["peer_fingerprint"] == patient.node.identity.fingerprint()
        await clinician.w.wait_for("direct-open")
        await clinician.w.wait_for("path", active="direct")
        assert clinician.w.of("path-up", path="relay")  # the relay came up first
        await clinician.w.wait_count("message", 60, kind="waveform")
        # later messages come over the direct path
        assert clinician.w.of("message", path="direct")
    finally:
        await patient.stop()
        await clinician.stop()
    sent = patient.w.of("sent", peer=clinician.node.endpoint_id)
    received = clinician.w.of("message")
    assert len(received) >= 60
    check_stream(sent, received)
    assert not clinician.w.of("waveform-gap")
    assert not patient.w.of("rejected") and not clinician.w.of("rejected")


async def test_patient_serves_two_clinicians_with_own_sessions(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("s2", "patient")), "patient")
    c1 = await start_inproc(server.join_url(server.mint("s2", "clinician")), "c1")
    c2 = await start_inproc(server.join_url(server.mint("s2", "clinician")), "c2")
    try:
        for c in (c1, c2):
            await c.w.wait_for("path", active="direct")
            await c.w.wait_count("message", 30, kind="waveform")
        assert len(patient.node.peers) == 2
        sas = {c.w.of("handshake")[0]["sas"] for c in (c1, c2)}
        assert len(sas) == 2  # one session (own keys) per clinician
        pcs = {id(link.direct.pc) for link in patient.node.peers.values() if link.direct}
        assert len(pcs) == 2  # one RTCPeerConnection per clinician
    finally:
        for n in (c1, c2, patient):
            await n.stop()
    for c in (c1, c2):
        check_stream(patient.w.of("sent", peer=c.node.endpoint_id), c.w.of("message"))


async def test_wfdb_source_arrives_bit_exact(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import wfdb  # type: ignore[import-untyped]

    rng = np.random.default_rng(7)
    digital = (rng.standard_normal((3600, 1)) * 200).astype(np.int16)
    wfdb.wrsamp(
        "rec",
        fs=360,
        units=["mV"],
        sig_name=["MLII"],
        d_signal=digital,
        fmt=["16"],
        adc_gain=[200.0],
        baseline=[0],
        write_dir=str(tmp_path),
    )
    patient = await start_inproc(
        server.join_url(server.mint("s3", "patient")), "patient", source=f"wfdb:{tmp_path / 'rec'}"
    )
    clinician = await start_inproc(server.join_url(server.mint("s3", "clinician")), "clinician")
    got: list[int] = []
    from p2pmed.vitals.codec import Waveform, decode

    def grab(link, event) -> None:  # type: ignore[no-untyped-def]
        msg = decode(event.data)
        if isinstance(msg, Waveform):
            got.extend(msg.samples)

    app = clinician.node.app
    original = app.on_message

    def on_message(link, event) -> None:  # type: ignore[no-untyped-def]
        grab(link, event)
        original(link, event)

    app.on_message = on_message  # type: ignore[method-assign]
    try:
        await clinician.w.wait_count("message", 15, kind="waveform", signal="MLII")
    finally:
        await clinician.stop()
        await patient.stop()
    first = clinician.w.of("message", kind="waveform")[0]["first_seq"]
    assert got == [int(x) for x in digital[first : first + len(got), 0]]


async def test_numerics_go_high_waveforms_medium(server) -> None:  # type: ignore[no-untyped-def]
    # protocol 7: NUMERICS HIGH (what a clinician reads must not wait behind waveforms)
    patient = await start_inproc(server.join_url(server.mint("s4", "patient")), "patient")
    clinician = await start_inproc(server.join_url(server.mint("s4", "clinician")), "clinician")
    try:
        await clinician.w.wait_count("message", 3, kind="numerics")
    finally:
        await patient.stop()
        await clinician.stop()
    sent = patient.w.of("sent", peer=clinician.node.endpoint_id)
    assert {e["cls"] for e in sent if e["kind"] == "numerics"} == {"HIGH"}
    assert {e["cls"] for e in sent if e["kind"] == "waveform"} == {"MEDIUM"}
    got = clinician.w.of("message", kind="numerics")
    assert len(got) >= 3 and {e["cls"] for e in got} == {"HIGH"}
    check_stream(sent, clinician.w.of("message"))
