"""A real patient node replaying an ECG-only WFDB record: the clinician gets HR numerics
derived from the ECG and the alarms they raise, or an "hr-unavailable" technical alarm."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import wfdb  # type: ignore[import-untyped]

from tests.node.conftest import start_inproc, start_proc

DATA = Path(__file__).resolve().parents[1] / "data"


async def test_wfdb_patient_sends_derived_hr_and_hr_alarms(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for ext in ("hea", "dat"):  # no .atr: the HR comes from QRS detection
        shutil.copy(DATA / f"mitdb208.{ext}", tmp_path / f"mitdb208.{ext}")
    # a real patient process: QRS detection runs in a spawned worker process
    patient = await start_proc(
        server.join_url(server.mint("h1", "patient")),
        "patient",
        "--source",
        f"wfdb:{tmp_path / 'mitdb208'}",
        "--rate",
        "2",  # hr-high holds from 13 s to 19 s of the record: 6.5-9.5 s after the start
    )
    clinician = await start_inproc(server.join_url(server.mint("h1", "clinician")), "clinician")
    try:
        alarm = await clinician.w.wait_for("alarm", condition="hr-high", state="ACTIVE")
        assert alarm["category"] == "PHYSIOLOGICAL" and alarm["value"] > 120
        await clinician.w.wait_for(  # (the alarm may come first: open alarms go to a newcomer)
            lambda e: e["event"] == "message" and e.get("kind") == "numerics" and e["values"]["hr"]
        )
        numerics = [e for e in clinician.w.of("message", kind="numerics") if e["values"]["hr"]]
        assert numerics and all(90 < e["values"]["hr"] < 140 for e in numerics)
        sent = patient.w.of("sent", kind="numerics")
        assert sent and {e["hr_source"] for e in sent} == {"ecg-detector"}
        assert patient.w.of("source-started")[0]["hr_source"] == "ecg-detector"
        assert not patient.w.of("hr-detection-in-thread")
        from p2pmed.ui import TerminalUI

        await clinician.w.wait_for("patient-status", hr_source="ecg-detector")
        screen = "\n".join(TerminalUI(clinician.node.app).render())  # type: ignore[arg-type]
        assert "/min (from ECG)" in screen
    finally:
        await clinician.stop()
        await patient.stop()


async def test_flat_ecg_shows_hr_unavailable_not_a_blank(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wfdb.wrsamp(
        "flat", fs=360, units=["mV"], sig_name=["MLII"], d_signal=np.zeros((360 * 20, 1), int),
        fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path),
    )  # fmt: skip
    patient = await start_inproc(
        server.join_url(server.mint("h2", "patient")),
        "patient",
        source=f"wfdb:{tmp_path / 'flat'}",
        rate=4.0,
    )
    clinician = await start_inproc(server.join_url(server.mint("h2", "clinician")), "clinician")
    try:
        alarm = await clinician.w.wait_for("alarm", condition="hr-unavailable")
        assert alarm["category"] == "TECHNICAL" and alarm["state"] == "ACTIVE"
        assert all(e["values"]["hr"] is None for e in clinician.w.of("message", kind="numerics"))
        from p2pmed.ui import TerminalUI

        screen = "\n".join(TerminalUI(clinician.node.app).render())  # type: ignore[arg-type]
        assert "HR unavailable" in screen
    finally:
        await clinician.stop()
        await patient.stop()
