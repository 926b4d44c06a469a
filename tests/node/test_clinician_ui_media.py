"""Clinician side end to end: terminal UI (numerics, trace, alarm, ack key, paths, SAS),
FHIR export, and recording the patient's test-pattern video and tone."""

from __future__ import annotations

import json

import av

from p2pmed.ui import TerminalUI, sparkline
from tests.node.conftest import start_inproc


def test_sparkline_shape() -> None:
    line = sparkline([0.0, 1.0, 0.0, -1.0] * 100, width=40)
    assert len(line) == 40 and set(line) <= set(" ▁▂▃▄▅▆▇█")
    assert sparkline([]) == ""


async def test_ui_fhir_and_recording(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fhir = tmp_path / "obs.ndjson"
    rec = tmp_path / "visit.mp4"
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")),
        "patient",
        scenario="alarm",
        media="testpattern",
    )
    clinician = await start_inproc(
        server.join_url(server.mint("s1", "clinician")),
        "clinician",
        fhir_out=str(fhir),
        record=str(rec),
    )
    try:
        alarm = await clinician.w.wait_for("alarm")
        await clinician.w.wait_count("message", 5, kind="numerics")
        ui = TerminalUI(clinician.node.app)  # type: ignore[arg-type]
        screen = "\n".join(ui.render())
        sas = clinician.w.of("handshake")[0]["sas"]
        assert f"SAS {sas}" in screen
        assert "HR " in screen and "SpO2" in screen and "/min" in screen
        assert "UNACKNOWLEDGED" in screen and alarm["condition"] in screen
        assert "direct:up" in screen or "relay:up" in screen
        ui.key("a")  # acknowledge from the keyboard
        await patient.w.wait_for("alarm-ack", alarm_id=alarm["alarm_id"])
        assert "acked by" in "\n".join(ui.render())
        await clinician.w.wait_count("message", 150)  # a few seconds of video recorded
    finally:
        await clinician.stop()
        await patient.stop()
    obs = [json.loads(line) for line in fhir.read_text().splitlines()]
    assert obs and {o["resourceType"] for o in obs} == {"Observation", "DetectedIssue"}
    issues = [o for o in obs if o["resourceType"] == "DetectedIssue"]  # the alarm, acked
    assert any(o.get("mitigation") for o in issues)
    assert any(o.get("valueSampledData") or o.get("component") for o in obs)
    with av.open(str(rec)) as container:
        kinds = {s.type for s in container.streams}
    assert "video" in kinds and "audio" in kinds


def write_clip(path: str) -> None:
    """Two seconds of 160x120 video at 15 fps, written with PyAV."""
    import numpy as np

    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(30):
            img = np.full((120, 160, 3), (i * 8) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


async def test_media_file_source_is_streamed_and_recorded(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = tmp_path / "clip.mp4"
    write_clip(str(clip))
    rec = tmp_path / "got.mp4"
    patient = await start_inproc(
        server.join_url(server.mint("s1", "patient")), "patient", media=f"file:{clip}"
    )
    clinician = await start_inproc(
        server.join_url(server.mint("s1", "clinician")), "clinician", record=str(rec)
    )
    try:
        await clinician.w.wait_for("direct-open")
        await clinician.w.wait_count("message", 40)
    finally:
        await clinician.stop()
        await patient.stop()
    with av.open(str(rec)) as container:
        video = [s for s in container.streams if s.type == "video"]
        assert video
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0
