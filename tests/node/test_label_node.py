"""`p2pmed node --label TEXT --fhir-patient REF` (a real patient process): the clinician
shows the label (in --json and the terminal view) and uses the announced FHIR subject."""

from __future__ import annotations

import pytest

from p2pmed.ui import TerminalUI
from tests.node.conftest import start_inproc, start_proc


async def test_patient_label_and_subject_reach_the_clinician(server) -> None:  # type: ignore[no-untyped-def]
    patient = await start_proc(
        server.join_url(server.mint("l1", "patient")),
        "patient",
        "--label",
        "Bed 3 / Zoë",
        "--fhir-patient",
        "abc-9",
    )
    clinician = await start_inproc(server.join_url(server.mint("l1", "clinician")), "clinician")
    try:
        st = await clinician.w.wait_for("patient-status")
        assert st["label"] == st["shown_as"] == "Bed 3 / Zoë"
        assert st["subject"] == "Patient/abc-9" and st["stream"] == "STREAMING"
        await clinician.w.wait_for("patient-status", hr_source="synthetic")
        app = clinician.node.app
        assert app.subject(st["peer"]) == "Patient/abc-9"  # type: ignore[attr-defined]
        screen = "\n".join(TerminalUI(app).render())  # type: ignore[arg-type]
        assert "PATIENT Bed 3 / Zoë" in screen and "unidentified" not in screen
    finally:
        await clinician.stop()
        await patient.stop()
    sent = [e for e in patient.w.of("sent") if e["kind"] == "patient-status"]
    assert sent and all(e["cls"] == "HIGH" for e in sent)
    assert all("label" not in e for e in sent)  # the label stays out of "sent"/"message" lines


async def test_a_label_too_long_for_the_wire_is_refused_at_the_flag(server) -> None:  # type: ignore[no-untyped-def]
    from p2pmed.node.config import ConfigError

    with pytest.raises(ConfigError, match="--label"):
        await start_inproc(
            server.join_url(server.mint("l2", "patient")), "patient", label="\U0001f600" * 64
        )  # 64 characters, 256 UTF-8 bytes: one more than PATIENT_STATUS carries
