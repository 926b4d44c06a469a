"""Real nodes: every FHIR resource the clinician exports for one patient names one subject
(the patient's --fhir-patient, else its endpoint id; never the session id), alarms are
exported as DetectedIssue (raised, acknowledged, cleared), and the file is 0600."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.observation import Observation

from tests.node.conftest import start_inproc


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _run(
    server, tmp_path: Path, session: str, **patient_kw: Any
) -> tuple[list[dict[str, Any]], str, Path]:  # type: ignore[no-untyped-def]
    out = tmp_path / f"{session}.ndjson"
    patient = await start_inproc(
        server.join_url(server.mint(session, "patient")), "patient", scenario="alarm", **patient_kw
    )
    old = os.umask(0)  # the export must be private whatever the umask
    try:
        clinician = await start_inproc(
            server.join_url(server.mint(session, "clinician")), "clinician", fhir_out=str(out)
        )
    finally:
        os.umask(old)
    try:
        alarm = await clinician.w.wait_for("alarm", state="ACTIVE")
        await clinician.w.wait_count("message", 4, kind="numerics")
        clinician.node.app.command({"cmd": "ack", "alarm_id": alarm["alarm_id"]})  # type: ignore[attr-defined]
        await patient.w.wait_for("alarm-ack", alarm_id=alarm["alarm_id"])
    finally:
        await clinician.stop()
        await patient.stop()
    return _read(out), patient.node.endpoint_id, out


async def test_one_subject_alarms_exported_and_file_private(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resources, _, out = await _run(server, tmp_path, "f1", fhir_patient="Patient/abc-1")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    kinds = {r["resourceType"] for r in resources}
    assert kinds == {"Observation", "DetectedIssue"}
    subjects = {
        (r.get("subject") or r.get("patient"))["reference"]
        for r in resources  # type: ignore[index]
    }
    assert subjects == {"Patient/abc-1"}
    for r in resources:
        (Observation if r["resourceType"] == "Observation" else DetectedIssue).model_validate(r)
    waves = [r for r in resources if "valueSampledData" in r]
    vitals = [r for r in resources if "meta" in r]
    assert waves and vitals
    issues = [r for r in resources if r["resourceType"] == "DetectedIssue"]
    first = issues[0]
    assert first["status"] == "preliminary" and "mitigation" not in first
    same = [r for r in issues if r["id"] == first["id"]]
    acked = [r for r in same if "mitigation" in r]
    assert acked and acked[0]["mitigation"][0]["action"]["coding"][0]["code"] == "acknowledged"


async def test_default_subject_is_the_patient_endpoint_not_the_session(server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resources, patient_id, _ = await _run(server, tmp_path, "f2")
    subjects = {(r.get("subject") or r.get("patient"))["reference"] for r in resources}  # type: ignore[index]
    assert subjects == {f"Patient/{patient_id}"}
    assert any("valueSampledData" in r for r in resources)
    assert any("valueQuantity" in r for r in resources)
