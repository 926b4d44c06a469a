"""The clinician's FHIR export of a bedside device, end to end: a patient node process fed by
`p2pmed hl7-sim` over MLLP, a clinician node with --fhir-out, a real signaling server. The
NDJSON has the monitor as a Device, its METRICs as MDC-coded Observations, and the NUMERICS
and Observations referencing the Device; every resource validates with fhir.resources (R4B)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from p2pmed.vitals import fhir
from signaling.testing import RunningServer, running_server
from tests.devices.test_hl7_node import hl7_sim, sim_result
from tests.node.conftest import start_inproc, start_proc

KINDS = {"Device": Device, "Observation": Observation, "DetectedIssue": DetectedIssue}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def test_fhir_export_has_the_device_and_references_it(
    server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "fhir.ndjson"
    patient = await start_proc(
        server.join_url(server.mint("f1", "patient")),
        "patient",
        "--source", "hl7-mllp:127.0.0.1:0", "--fhir-patient", "PID-7",
    )  # fmt: skip
    clinician = await start_inproc(
        server.join_url(server.mint("f1", "clinician")), "clinician", fhir_out=str(out)
    )
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        sim = await hl7_sim(port, "--count", "4", "--rate", "10")
        assert (await sim_result(sim))["acks"] == {"AA": 4}
        await clinician.w.wait_for("message", kind="device", state="CONNECTED")
        await clinician.w.wait_for("message", kind="metric", code=149530)
        await clinician.w.wait_for(
            lambda e: e["event"] == "message" and e.get("kind") == "numerics"
            and e["values"]["hr"] is not None
        )  # fmt: skip
    finally:
        await clinician.stop()
        await patient.stop()

    resources: list[dict[str, Any]] = [json.loads(x) for x in out.read_text().splitlines()]
    for res in resources:
        KINDS[res["resourceType"]].model_validate(res)
    devices = [r for r in resources if r["resourceType"] == "Device"]
    assert devices, "no Device resource in the export"
    dev = devices[0]
    assert dev["identifier"] == [{"system": fhir.DEVICE_ID_SYSTEM["hl7"], "value": "MON-1"}]
    assert dev["patient"] == {"reference": "Patient/PID-7"} and dev["status"] == "active"
    assert {d["id"] for d in devices} == {dev["id"]}  # one device, one resource id
    ref = f"Device/{dev['id']}"
    obs = [r for r in resources if r["resourceType"] == "Observation"]
    metrics = [o for o in obs if o["code"]["coding"][0]["system"] == fhir.MDC]
    pulse = [o for o in metrics if o["code"]["coding"][0]["code"] == "149530"]
    assert pulse and pulse[0]["code"]["coding"][1] == {
        "system": fhir.LOINC,
        "code": "8889-8",
        "display": "Heart rate by Pulse oximetry",
    }
    assert pulse[0]["valueQuantity"]["code"] == "/min"
    vitals = [o for o in obs if o["code"]["coding"][0]["system"] == fhir.LOINC]
    assert any(o["code"]["coding"][0]["code"] == "8867-4" for o in vitals)  # HR from NUMERICS
    # everything measured after the device said who it is references it
    first_dev = resources.index(dev)
    later = [o for o in obs if resources.index(o) > first_dev]
    assert later and all(o["device"]["reference"] == ref for o in later)
    assert all(o["subject"] == {"reference": "Patient/PID-7"} for o in obs)
