import json
import re
from typing import Any

import pytest

from p2pmed.core.errors import CodecError
from p2pmed.vitals import codec, fhir
from p2pmed.vitals.codec import PLETH, Numerics, Param, StatusFlags, Waveform
from p2pmed.vitals.ranges import mark_suspect

T = 1_700_000_000_123_456
FULL = {
    Param.HR: 72.5,
    Param.SYS: 120.0,
    Param.DIA: 80.0,
    Param.SPO2: 97.5,
    Param.TEMP: 36.85,
    Param.RR: 14.0,
}
# FHIR R4 dateTime regex (from the spec), restricted here to values with a time zone
DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]"
    r"|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)"
    r"((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)


def _codes(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]]


def _check_vital_sign(obs: dict[str, Any], patient: str) -> None:
    """Required elements of the R4 Vital Signs profile (observation-vitalsigns)."""
    assert obs["resourceType"] == "Observation"
    assert obs["status"] == "final"
    cats = [c for cat in obs["category"] for c in cat["coding"]]
    assert {"system": fhir.CATEGORY_SYSTEM, "code": "vital-signs", "display": "Vital Signs"} in cats
    assert obs["code"]["coding"] and all(c["system"] and c["code"] for c in obs["code"]["coding"])
    assert obs["subject"] == {"reference": f"Patient/{patient}"}
    assert DATETIME.fullmatch(obs["effectiveDateTime"])
    assert fhir.VITALSIGNS_PROFILE in obs["meta"]["profile"]
    assert ("valueQuantity" in obs) != ("component" in obs)  # one value or a BP panel
    for q in [obs.get("valueQuantity")] + [
        c.get("valueQuantity") for c in obs.get("component", [])
    ]:
        if q is not None:
            assert q["system"] == fhir.UCUM and isinstance(q["value"], float)
    json.dumps(obs)  # plain JSON


def _by_code(observations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["code"]["coding"][0]["code"]: o for o in observations}


def test_all_vitals() -> None:
    obs = fhir.numerics_to_observations(Numerics.from_values(T, "bed-7", FULL))
    assert len(obs) == 5
    for o in obs:
        _check_vital_sign(o, "bed-7")
        assert o["effectiveDateTime"] == "2023-11-14T22:13:20.123456Z"
        assert "note" not in o
    by = _by_code(obs)
    expected = {
        "8867-4": (72.5, "/min", "heartrate"),
        "2708-6": (97.5, "%", "oxygensat"),
        "8310-5": (36.85, "Cel", "bodytemp"),
        "9279-1": (14.0, "/min", "resprate"),
    }
    for loinc, (value, ucum, profile) in expected.items():
        q = by[loinc]["valueQuantity"]
        assert (q["value"], q["code"]) == (value, ucum)
        assert by[loinc]["meta"]["profile"][1] == fhir.SD + profile
    assert (fhir.LOINC, "59408-5") in _codes(by["2708-6"]["code"])
    bp = by["85354-9"]
    assert bp["meta"]["profile"][1] == fhir.SD + "bp"
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in bp["component"]}
    assert comps["8480-6"] == {
        "value": 120.0,
        "unit": "mmHg",
        "system": fhir.UCUM,
        "code": "mm[Hg]",
    }
    assert comps["8462-4"]["value"] == 80.0


def test_absent_values_are_left_out_and_half_bp_has_absent_reason() -> None:
    obs = fhir.numerics_to_observations(Numerics.from_values(T, "p", {Param.SYS: 110.0}))
    assert len(obs) == 1
    bp = obs[0]
    _check_vital_sign(bp, "p")
    dia = next(c for c in bp["component"] if c["code"]["coding"][0]["code"] == "8462-4")
    assert "valueQuantity" not in dia
    assert dia["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert fhir.numerics_to_observations(Numerics(T, "p")) == []


def test_suspect_values_kept_with_note() -> None:
    n = mark_suspect(Numerics.from_values(T, "p", {**FULL, Param.HR: 300.0}))
    by = _by_code(fhir.numerics_to_observations(n))
    hr = by["8867-4"]
    assert hr["valueQuantity"]["value"] == 300.0  # not dropped, not clamped
    assert "suspect" in hr["note"][0]["text"] and "30-250" in hr["note"][0]["text"]
    assert "note" not in by["2708-6"]


def test_sensor_fault_noted() -> None:
    n = Numerics.from_values(T, "p", {Param.SPO2: 95.0}, flags=StatusFlags.SENSOR_FAULT)
    (obs,) = fhir.numerics_to_observations(n)
    assert "sensor fault" in obs["note"][0]["text"]


def test_waveform_sampled_data() -> None:
    w = Waveform("MLII", 360, T, 0, 1 / 200, "mV", (-49, -43, 0, 220))
    obs = fhir.waveform_to_observation(w, "bed-7")
    assert obs["resourceType"] == "Observation" and obs["status"] == "final"
    assert obs["subject"] == {"reference": "Patient/bed-7"}
    assert _codes(obs["code"]) == [(fhir.MDC, "131330")]  # MDC_ECG_ELEC_POTL_II
    assert obs["code"]["text"] == "ECG lead MLII"
    sd = obs["valueSampledData"]
    assert sd["origin"] == {"value": 0, "unit": "mV", "system": fhir.UCUM, "code": "mV"}
    assert sd["period"] == pytest.approx(1000 / 360, abs=1e-6)
    assert sd["factor"] == 0.005
    assert sd["dimensions"] == 1
    assert sd["data"] == "-49 -43 0 220"
    # a reader recovers the physical values
    values = [float(x) * sd["factor"] for x in sd["data"].split()]
    assert values == pytest.approx([-0.245, -0.215, 0.0, 1.1])
    assert DATETIME.fullmatch(obs["effectiveDateTime"])


@pytest.mark.parametrize(
    ("signal", "rate", "code"),
    [("I", 500, "131329"), ("V1", 500, "131331"), ("aVF", 250, "131392"), (PLETH, 125, "150452")],
)
def test_waveform_codes(signal: str, rate: int, code: str) -> None:
    w = Waveform(signal, rate, T, 0, 0.001, "1" if signal == PLETH else "mV", (1, 2))
    obs = fhir.waveform_to_observation(w, "p")
    assert _codes(obs["code"]) == [(fhir.MDC, code)]
    assert obs["valueSampledData"]["period"] == 1000 / rate


def test_every_ecg_lead_has_a_code() -> None:
    for lead in codec.ECG_LEADS:
        w = Waveform(lead, 500, T, 0, 0.001, "mV", (0,))
        assert fhir.waveform_to_observation(w, "p")["code"]["coding"][0]["code"].isdigit()


def test_datetime_limits() -> None:
    assert fhir.fhir_datetime(0) == "1970-01-01T00:00:00.000000Z"
    with pytest.raises(CodecError):
        fhir.fhir_datetime(codec.U64)
