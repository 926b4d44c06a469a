"""FHIR export of what a bedside device reported, validated with fhir.resources (R4B): the
Device resource, Observation.device references, METRIC as an MDC-coded Observation."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from p2pmed.devices.mapping import METRICS
from p2pmed.vitals import fhir
from p2pmed.vitals.codec import (
    DeviceMetric,
    DeviceState,
    DeviceStatus,
    MetricFlags,
    Numerics,
    Param,
    Waveform,
)

T = 1_700_000_000_000_000
HL7 = DeviceStatus(T, DeviceState.CONNECTED, "hl7", "MON-1", "VS-9", "SN42", "ACME", "PID-7")


def _valid(res: dict[str, Any]) -> None:
    {"Device": Device, "Observation": Observation}[res["resourceType"]].model_validate(res)


def test_device_resource() -> None:
    res = fhir.device_to_resource(HL7, "Patient/PID-7")
    _valid(res)
    assert res["identifier"] == [{"system": fhir.DEVICE_ID_SYSTEM["hl7"], "value": "MON-1"}]
    assert (res["status"], res["serialNumber"], res["modelNumber"]) == ("active", "SN42", "VS-9")
    assert res["manufacturer"] == "ACME" and res["patient"] == {"reference": "Patient/PID-7"}
    assert "note" not in res
    sdc = DeviceStatus(T, DeviceState.LOST, "sdc", "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    lost = fhir.device_to_resource(sdc, "Patient/P-1")
    _valid(lost)
    assert lost["status"] == "inactive" and lost["id"] != res["id"]
    assert lost["id"] == fhir.device_id(sdc)  # stable: the same device, the same resource


def test_device_of_another_patient_says_so() -> None:
    res = fhir.device_to_resource(HL7, "Patient/PID-8")
    _valid(res)
    assert "PID-7" in res["note"][0]["text"]


def test_observations_reference_the_device() -> None:
    ref = fhir.device_reference(HL7)
    assert ref["reference"] == f"Device/{fhir.device_id(HL7)}"
    n = Numerics.from_values(T, "bed-7", {Param.HR: 72.0, Param.SYS: 120.0, Param.DIA: 80.0})
    obs = fhir.numerics_to_observations(n, "Patient/PID-7", device=ref)
    assert len(obs) == 2
    for o in obs:
        _valid(o)
        assert o["device"] == ref
    assert all("device" not in o for o in fhir.numerics_to_observations(n, "Patient/PID-7"))
    w = Waveform("II", 500, T, 0, 0.001, "mV", (1, 2, 3))
    wave = fhir.waveform_to_observation(w, "Patient/PID-7", device=ref)
    _valid(wave)
    assert wave["device"] == ref


def test_metric_observation_mdc_coded_and_invalid_is_not_final() -> None:
    m = DeviceMetric(T, 149530, 71.0, MetricFlags.NONE, "/min", "MDC_PULS_OXIM_PULS_RATE", "p")
    loinc = ("8889-8", "Heart rate by Pulse oximetry")
    obs = fhir.metric_to_observation(m, "Patient/PID-7", fhir.device_reference(HL7), loinc)
    _valid(obs)
    assert obs["code"]["coding"][0] == {
        "system": fhir.MDC,
        "code": "149530",
        "display": "MDC_PULS_OXIM_PULS_RATE",
    }
    assert obs["code"]["coding"][1]["code"] == "8889-8"
    assert obs["valueQuantity"] == {
        "value": 71.0,
        "unit": "/min",
        "system": fhir.UCUM,
        "code": "/min",
    }
    assert obs["status"] == "final"
    bad = DeviceMetric(T, 150344, 12.0, MetricFlags.INVALID, "MDC_DIM_X", "", "p")
    obs = fhir.metric_to_observation(bad, "Patient/PID-7")
    _valid(obs)
    assert obs["status"] == "preliminary" and "not valid" in obs["note"][0]["text"]
    assert obs["valueQuantity"] == {"value": 12.0, "unit": "MDC_DIM_X"}  # no UCUM claimed


def test_every_table_metric_exports() -> None:
    for mdc in METRICS.values():
        m = DeviceMetric(T, mdc.code, 1.0, MetricFlags.NONE, mdc.ucum, mdc.label, "p")
        _valid(fhir.metric_to_observation(m, "Patient/x", loinc=(mdc.loinc, mdc.label)))
