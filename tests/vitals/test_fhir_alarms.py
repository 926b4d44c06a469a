"""FHIR export validated with fhir.resources (R4B): one subject for every resource of a
patient, and alarms as DetectedIssue through raised, acknowledged and cleared."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.observation import Observation

from p2pmed.vitals import fhir
from p2pmed.vitals.codec import (
    Alarm,
    AlarmCategory,
    AlarmState,
    Numerics,
    Param,
    Priority,
    Waveform,
)

T = 1_700_000_000_000_000
SUBJECT = "Patient/abc-1"


def _valid(resource: dict[str, Any]) -> None:
    cls = {"Observation": Observation, "DetectedIssue": DetectedIssue}[resource["resourceType"]]
    cls.model_validate(resource)


def _alarm(state: AlarmState, priority: Priority = Priority.HIGH, **kw: Any) -> Alarm:
    fields: dict[str, Any] = {
        "alarm_id": 42,
        "priority": priority,
        "state": state,
        "category": AlarmCategory.PHYSIOLOGICAL,
        "time_us": T,
        "value": 128.0,
        "condition": "hr-high",
        "patient_id": "n1",
    }
    fields.update(kw)
    return Alarm(**fields)


def test_numerics_and_waveforms_name_the_given_subject_and_validate() -> None:
    n = Numerics.from_values(
        T, "session-xyz", {p: v for p, v in zip(Param, (72, 120, 80, 97, 36.9, 14), strict=True)}
    )
    w = Waveform("MLII", 360, T, 0, 0.005, "mV", (1, -2, 3))
    resources = [
        *fhir.numerics_to_observations(n, SUBJECT),
        fhir.waveform_to_observation(w, SUBJECT),
    ]
    assert len(resources) == 6
    for r in resources:
        assert r["subject"] == {"reference": SUBJECT}  # never the id inside the NUMERICS
        _valid(r)
    assert fhir.waveform_to_observation(w, "n1")["subject"] == {"reference": "Patient/n1"}
    url = "https://fhir.example.org/r4/Patient/77"
    assert fhir.waveform_to_observation(w, url)["subject"] == {"reference": url}


def test_alarm_life_as_detected_issue() -> None:
    raised = fhir.alarm_to_detected_issue(_alarm(AlarmState.ACTIVE), SUBJECT, source="n1")
    acked = fhir.alarm_to_detected_issue(
        _alarm(AlarmState.ACTIVE),
        SUBJECT,
        source="n1",
        raised_us=T,
        acknowledged=("c_1", T + 5_000_000),
    )
    cleared = fhir.alarm_to_detected_issue(
        _alarm(AlarmState.CLEARED, time_us=T + 9_000_000),
        SUBJECT,
        source="n1",
        raised_us=T,
        acknowledged=("c_1", T + 5_000_000),
    )
    for r in (raised, acked, cleared):
        _valid(r)
        assert r["patient"] == {"reference": SUBJECT}
        assert r["id"] == "alarm-n1-42" and r["identifier"][0]["value"] == "n1/42"
        assert r["code"]["coding"] == [{"system": fhir.ALARM_CONDITION, "code": "hr-high"}]
        assert r["severity"] == "high"
        assert r["identifiedDateTime"] == "2023-11-14T22:13:20.000000Z"
    assert raised["status"] == acked["status"] == "preliminary"
    assert cleared["status"] == "final" and "cleared" in cleared["detail"]
    assert "mitigation" not in raised
    (m,) = acked["mitigation"]
    assert m["action"]["coding"][0]["code"] == "acknowledged"
    assert m["date"] == "2023-11-14T22:13:25.000000Z"
    assert m["author"]["identifier"] == {"system": fhir.ENDPOINT, "value": "c_1"}
    assert cleared["mitigation"] == acked["mitigation"]


@pytest.mark.parametrize(
    ("priority", "severity"),
    [(Priority.HIGH, "high"), (Priority.MEDIUM, "moderate"), (Priority.LOW, "low")],
)
def test_priority_maps_to_severity(priority: Priority, severity: str) -> None:
    r = fhir.alarm_to_detected_issue(_alarm(AlarmState.ESCALATED, priority), "p", source="n1")
    assert r["severity"] == severity and "escalated" in r["detail"]
    _valid(r)


def test_technical_alarm_without_value_and_odd_endpoint_id() -> None:
    a = _alarm(
        AlarmState.ACTIVE, Priority.MEDIUM, category=AlarmCategory.TECHNICAL,
        value=None, condition="hr-unavailable",
    )  # fmt: skip
    r = fhir.alarm_to_detected_issue(a, SUBJECT, source="node_7")
    _valid(r)
    assert r["id"] == "alarm-node-7-42"  # FHIR ids allow no "_"
    assert r["identifier"][0]["value"] == "node_7/42"
    assert r["code"]["text"] == "Technical alarm hr-unavailable" and "value" not in r["detail"]
