"""When the patient's source ends, clinicians are told the stream ended (PATIENT_STATUS with
stream ENDED): a state of its own, not a lost link. The patient's label reaches them too."""

from __future__ import annotations

from pathlib import Path

import wfdb  # type: ignore[import-untyped]

from p2pmed.ui import TerminalUI
from tests.node.conftest import check_stream, start_inproc, start_proc

DATA = Path(__file__).resolve().parents[1] / "data"


def _short_record(tmp_path: Path, seconds: int) -> Path:
    rec = wfdb.rdrecord(str(DATA / "mitdb208"), physical=False)
    wfdb.wrsamp(
        "short", fs=360, units=["mV"], sig_name=["MLII"], d_signal=rec.d_signal[: seconds * 360],
        fmt=["212"], adc_gain=[200.0], baseline=[1024], write_dir=str(tmp_path),
    )  # fmt: skip
    return tmp_path / "short"


async def test_clinicians_are_told_the_stream_ended_and_the_link_stays(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    record = _short_record(tmp_path, 6)
    patient = await start_inproc(
        server.join_url(server.mint("e1", "patient")),
        "patient",
        source=f"wfdb:{record}",
        rate=1.5,
        label="Bed 7 — Ånna Example",
    )
    proc = await start_proc(server.join_url(server.mint("e1", "clinician")), "clinician-proc")
    inproc = await start_inproc(server.join_url(server.mint("e1", "clinician")), "clinician")
    try:
        for c in (proc, inproc):
            first = await c.w.wait_for("patient-status")
            assert first["label"] == "Bed 7 — Ånna Example"
            assert first["shown_as"] == "Bed 7 — Ånna Example"
            ended = await c.w.wait_for("stream-ended", timeout=90)
            assert ended["label"] == "Bed 7 — Ånna Example"
            last = c.w.of("patient-status")[-1]
            assert last["stream"] == "ENDED" and last["hr_source"] == "ecg-detector"
        await patient.w.wait_for("source-ended")
        screen = "\n".join(TerminalUI(inproc.node.app).render())  # type: ignore[arg-type]
        assert "PATIENT Bed 7 — Ånna Example" in screen
        assert "STREAM ENDED" in screen
        link = inproc.node.peers[patient.node.endpoint_id]
        assert link.established and not link.closed and link.status()["active"]  # not lost
        # a clinician that arrives after the end learns it at once
        late = await start_inproc(server.join_url(server.mint("e1", "clinician")), "late")
        try:
            st = await late.w.wait_for("patient-status")
            assert st["stream"] == "ENDED"
            await late.w.wait_for("stream-ended")
        finally:
            await late.stop()
    finally:
        await inproc.stop()
        await proc.stop()
        await patient.stop()
    for c in (proc, inproc):
        sent = patient.w.of("sent", peer=c.w.of("joined")[0]["endpoint_id"])
        check_stream(sent, c.w.of("message"))
        assert c.w.of("message", kind="patient-status")
        assert not c.w.of("rejected", kind="app")  # the status message is understood


async def test_a_lost_link_is_not_a_stream_end(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    patient = await start_inproc(server.join_url(server.mint("e2", "patient")), "patient")
    clinician = await start_inproc(server.join_url(server.mint("e2", "clinician")), "clinician")
    try:
        st = await clinician.w.wait_for("patient-status")
        assert st["label"] is None and st["shown_as"] == "unidentified patient"
        assert st["stream"] == "STREAMING"
        await clinician.w.wait_count("message", 5, kind="numerics")
        await patient.stop()
        await clinician.w.wait_for("peer", state="left")
        screen = "\n".join(TerminalUI(clinician.node.app).render())  # type: ignore[arg-type]
        assert "STREAM ENDED" not in screen
        assert not clinician.w.of("stream-ended")
    finally:
        await clinician.stop()
        await patient.stop()
