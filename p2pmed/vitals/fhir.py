"""FHIR R4 export: Observations following the R4 Vital Signs profiles, waveforms as
Observations with valueSampledData, and alarms as DetectedIssue (docs/fhir.md says why).
Output is plain JSON-ready dicts. Every resource of one patient names the same subject."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from p2pmed.core.errors import CodecError
from p2pmed.vitals.codec import (
    DEVICE_CATEGORIES,
    PLETH,
    Alarm,
    AlarmCategory,
    AlarmState,
    DeviceMetric,
    DeviceState,
    DeviceStatus,
    Numerics,
    Param,
    Priority,
    StatusFlags,
    Waveform,
)
from p2pmed.vitals.ranges import RANGES

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:oid:2.16.840.1.113883.6.24"  # ISO/IEEE 11073-10101 nomenclature
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
SD = "http://hl7.org/fhir/StructureDefinition/"
VITALSIGNS_PROFILE = SD + "vitalsigns"

# param -> (profile, [(LOINC code, display)], UCUM code, human unit)
_VITALS: dict[Param, tuple[str, list[tuple[str, str]], str, str]] = {
    Param.HR: ("heartrate", [("8867-4", "Heart rate")], "/min", "beats/minute"),
    Param.SPO2: (
        "oxygensat",
        [
            ("2708-6", "Oxygen saturation in Arterial blood"),
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ],
        "%",
        "%",
    ),
    Param.TEMP: ("bodytemp", [("8310-5", "Body temperature")], "Cel", "Cel"),
    Param.RR: ("resprate", [("9279-1", "Respiratory rate")], "/min", "breaths/minute"),
}
_BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
_BP_PARTS = {
    Param.SYS: ("8480-6", "Systolic blood pressure"),
    Param.DIA: ("8462-4", "Diastolic blood pressure"),
}

# MDC_ECG_ELEC_POTL_<lead> = 131328 + MDC lead number; MDC_PULS_OXIM_PLETH = 150452
_LEAD_NUMBER = {
    "I": 1,
    "II": 2,
    "V1": 3,
    "V2": 4,
    "V3": 5,
    "V4": 6,
    "V5": 7,
    "V6": 8,
    "III": 61,
    "aVR": 62,
    "aVL": 63,
    "aVF": 64,
    "MLII": 2,  # modified lead II: coded as lead II, named in code.text
    "MLIII": 61,
}


def fhir_datetime(timestamp_us: int) -> str:
    """UTC FHIR dateTime with microseconds, e.g. 2023-11-14T22:13:20.000000Z."""
    try:
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=timestamp_us)
    except OverflowError as exc:
        raise CodecError("timestamp", "not representable as a FHIR dateTime") from exc
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def reference(subject: str) -> str:
    """A subject as a FHIR reference: a bare id becomes "Patient/<id>"; "Patient/<id>" and
    absolute URLs are kept."""
    return subject if "/" in subject else f"Patient/{subject}"


def _base(code: dict[str, Any], subject: str, timestamp_us: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": CATEGORY_SYSTEM, "code": "vital-signs", "display": "Vital Signs"}
                ],
                "text": "Vital Signs",
            }
        ],
        "code": code,
        "subject": {"reference": reference(subject)},
        "effectiveDateTime": fhir_datetime(timestamp_us),
    }


def _loinc(codes: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "coding": [{"system": LOINC, "code": c, "display": d} for c, d in codes],
        "text": codes[0][1],
    }


def _quantity(value: float, ucum: str, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _notes(n: Numerics, params: list[Param]) -> list[dict[str, str]]:
    notes = []
    for p in params:
        if n.suspect(p):
            r = RANGES[p]
            notes.append(
                {
                    "text": f"{p.name} value marked suspect: outside the plausible range "
                    f"{r.low:g}-{r.high:g} {r.unit} or inconsistent; verify before use"
                }
            )
    if n.flags & StatusFlags.SENSOR_FAULT:
        notes.append({"text": "The device reported a sensor fault with this measurement"})
    return notes


def numerics_to_observations(
    n: Numerics, subject: str | None = None, device: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One Vital Signs Observation per present value; systolic and diastolic go into one
    blood pressure panel. Suspect values are kept and carry a note. `subject`: the patient
    (a reference or a bare id); None = the id carried in the NUMERICS. `device`: the
    Observation.device reference (device_reference()) when a bedside device measured it."""
    subject = n.patient_id if subject is None else subject
    out = _numerics_observations(n, subject)
    if device is not None:
        for obs in out:
            obs["device"] = dict(device)
    return out


def _numerics_observations(n: Numerics, subject: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p, (profile, codes, ucum, unit) in _VITALS.items():
        v = n.value(p)
        if v is None:
            continue
        obs = _base(_loinc(codes), subject, n.timestamp_us)
        obs["meta"] = {"profile": [VITALSIGNS_PROFILE, SD + profile]}
        obs["valueQuantity"] = _quantity(v, ucum, unit)
        if notes := _notes(n, [p]):
            obs["note"] = notes
        out.append(obs)
    if n.value(Param.SYS) is not None or n.value(Param.DIA) is not None:
        obs = _base(_loinc([_BP_PANEL]), subject, n.timestamp_us)
        obs["meta"] = {"profile": [VITALSIGNS_PROFILE, SD + "bp"]}
        components = []
        for p, code in _BP_PARTS.items():
            comp: dict[str, Any] = {"code": _loinc([code])}
            v = n.value(p)
            if v is None:
                comp["dataAbsentReason"] = {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "code": "unknown",
                            "display": "Unknown",
                        }
                    ]
                }
            else:
                comp["valueQuantity"] = _quantity(v, "mm[Hg]", "mmHg")
            components.append(comp)
        obs["component"] = components
        if notes := _notes(n, [Param.SYS, Param.DIA]):
            obs["note"] = notes
        out.append(obs)
    return out


def _decimal(x: float) -> float:
    """Shortest decimal that round-trips the float32 wire value (0.005, not 0.00499999...)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def waveform_to_observation(
    w: Waveform, subject: str, device: dict[str, str] | None = None
) -> dict[str, Any]:
    """A WAVEFORM chunk as an Observation with valueSampledData (physical = data * factor).
    `subject`: the patient, a reference or a bare id; `device`: see numerics_to_observations."""
    if w.signal == PLETH:
        coding = {"system": MDC, "code": "150452", "display": "MDC_PULS_OXIM_PLETH"}
        text = "Plethysmogram"
    else:
        lead = _LEAD_NUMBER[w.signal]
        name = {"MLII": "II", "MLIII": "III"}.get(w.signal, w.signal).upper()
        coding = {
            "system": MDC,
            "code": str(131328 + lead),
            "display": f"MDC_ECG_ELEC_POTL_{name}",
        }
        text = f"ECG lead {w.signal}"
    obs = _base({"coding": [coding], "text": text}, subject, w.t0_us)
    obs["category"] = [
        {"coding": [{"system": CATEGORY_SYSTEM, "code": "procedure", "display": "Procedure"}]}
    ]
    obs["valueSampledData"] = {
        "origin": {"value": 0, "unit": w.unit, "system": UCUM, "code": w.unit},
        "period": round(1000 / w.sample_rate, 6),
        "factor": _decimal(w.scale),
        "dimensions": 1,
        "data": " ".join(str(s) for s in w.samples),
    }
    if device is not None:
        obs["device"] = dict(device)
    return obs


# -- bedside devices (docs/devices.md) ------------------------------------------------------

DEVICE_ID_SYSTEM = {
    "sdc": "urn:p2pmed:sdc-endpoint-reference",  # the provider's WS-Addressing EPR
    "hl7": "urn:p2pmed:hl7-equipment-id",  # OBX-18 equipment instance identifier / MSH-3
}
_DEVICE_KIND = {
    "sdc": "Patient monitor (IEEE 11073 SDC provider)",
    "hl7": "Patient monitor or gateway (HL7 v2, IHE PCD-01)",
}


def device_id(d: DeviceStatus) -> str:
    """A stable FHIR id for the device: protocol and a digest of its identifier."""
    digest = hashlib.sha256(d.device_id.encode()).hexdigest()[:16]
    return f"device-{re.sub(r'[^a-z0-9]', '-', d.protocol)}-{digest}"


def device_reference(d: DeviceStatus) -> dict[str, str]:
    """The Observation.device reference of a device_to_resource() Device."""
    return {"reference": f"Device/{device_id(d)}", "display": d.model or d.device_id}


def device_to_resource(d: DeviceStatus, subject: str) -> dict[str, Any]:
    """The bedside device as a FHIR Device: identifier (EPR / equipment id), model, serial,
    manufacturer, whether it is connected, and the patient it serves. A device that reports
    another patient than `subject` says so in a note (the patient node alarms on it)."""
    res: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id(d),
        "identifier": [
            {"system": DEVICE_ID_SYSTEM.get(d.protocol, "urn:p2pmed:device"), "value": d.device_id}
        ],
        "status": "active" if d.state is DeviceState.CONNECTED else "inactive",
        "type": {"text": _DEVICE_KIND.get(d.protocol, f"Bedside device ({d.protocol})")},
        "patient": {"reference": reference(subject)},
    }
    if d.manufacturer:
        res["manufacturer"] = d.manufacturer
    if d.serial:
        res["serialNumber"] = d.serial
    if d.model:
        res["modelNumber"] = d.model
        res["deviceName"] = [{"name": d.model, "type": "model-name"}]
    if d.patient_reported and d.patient_reported != reference(subject).rsplit("/", 1)[-1]:
        res["note"] = [
            {
                "text": f"The device reports patient id {d.patient_reported!r}, not this "
                "patient: its data are withheld and a technical alarm is raised"
            }
        ]
    return res


# LOINC displays of the codes the MDC table (p2pmed/devices/mapping.py) gives a METRIC
_LOINC_NAMES = {code: name for _, codes, _, _ in _VITALS.values() for code, name in codes} | dict(
    _BP_PARTS.values()
)
_LOINC_NAMES |= {
    "8889-8": "Heart rate by Pulse oximetry",
    "8478-0": "Mean blood pressure",
    "76215-3": "Invasive Systolic blood pressure",
    "76213-8": "Invasive Diastolic blood pressure",
    "76214-6": "Invasive Mean blood pressure",
}


def loinc_coding(code: str) -> tuple[str, str] | None:
    """(LOINC code, display) for metric_to_observation(loinc=...); None for "" or a code
    without a known display (the Observation is then coded in MDC alone)."""
    name = _LOINC_NAMES.get(code)
    return (code, name) if name is not None else None


def metric_to_observation(
    m: DeviceMetric,
    subject: str,
    device: dict[str, str] | None = None,
    loinc: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A METRIC (a device numeric with its MDC code) as an Observation coded in MDC (and in
    LOINC when `loinc` = (code, display) is known). A value the device flagged invalid is
    `preliminary` with a note, never `final`."""
    coding = [{"system": MDC, "code": str(m.code), "display": m.label or str(m.code)}]
    if loinc is not None:
        coding.append({"system": LOINC, "code": loinc[0], "display": loinc[1]})
    obs = _base({"coding": coding, "text": m.label or f"MDC {m.code}"}, subject, m.time_us)
    quantity: dict[str, Any] = {"value": m.value, "unit": m.unit}
    if not m.unit.startswith("MDC_"):  # converted to UCUM by the mapping
        quantity.update(system=UCUM, code=m.unit)
    obs["valueQuantity"] = quantity
    if not m.valid:
        obs["status"] = "preliminary"
        obs["note"] = [{"text": "The device flagged this value as not valid; never alarmed on"}]
    if device is not None:
        obs["device"] = dict(device)
    return obs


ALARM_CONDITION = "urn:p2pmed:alarm-condition"  # the ALARM condition codes (docs/protocol.md)
ALARM_ACTION = "urn:p2pmed:alarm-action"
ENDPOINT = "urn:p2pmed:endpoint"  # p2pmed endpoint ids
ALARM_ID = "urn:p2pmed:alarm"
_SEVERITY = {Priority.HIGH: "high", Priority.MEDIUM: "moderate", Priority.LOW: "low"}
_STATE_TEXT = {
    AlarmState.ACTIVE: "raised",
    AlarmState.LATCHED: "latched (condition gone, not yet acknowledged)",
    AlarmState.ESCALATED: "escalated (not acknowledged in time)",
    AlarmState.CLEARED: "cleared",
}


def alarm_to_detected_issue(
    alarm: Alarm,
    subject: str,
    *,
    source: str,
    raised_us: int | None = None,
    acknowledged: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The current state of one alarm as a DetectedIssue; export it again at every change
    (raised, escalated, latched, acknowledged, cleared): same `id` and identifier, so a
    FHIR server keeps one resource per alarm and its history as versions.

    source: endpoint id of the patient node that raised it (alarm ids are unique per
    sender); raised_us: when it was first raised, if known; acknowledged: (who, time_us)."""
    technical = alarm.category in (AlarmCategory.TECHNICAL, AlarmCategory.DEVICE_TECHNICAL)
    kind = "Technical" if technical else "Physiological"
    if alarm.category in DEVICE_CATEGORIES:
        kind = f"Device {kind.lower()}"  # the bedside device's own alert, forwarded
    value = "" if alarm.value is None else f", value {alarm.value:g}"
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": re.sub(r"[^A-Za-z0-9.-]", "-", f"alarm-{source}-{alarm.alarm_id}")[-64:],
        "identifier": [{"system": ALARM_ID, "value": f"{source}/{alarm.alarm_id}"}],
        "status": "final" if alarm.state is AlarmState.CLEARED else "preliminary",
        "code": {
            "coding": [{"system": ALARM_CONDITION, "code": alarm.condition}],
            "text": f"{kind} alarm {alarm.condition}",
        },
        "severity": _SEVERITY[alarm.priority],
        "patient": {"reference": reference(subject)},
        "identifiedDateTime": fhir_datetime(alarm.time_us if raised_us is None else raised_us),
        "author": {"identifier": {"system": ENDPOINT, "value": source}},
        "detail": f"{kind} alarm {alarm.condition}, priority {alarm.priority.name}, "
        f"{_STATE_TEXT[alarm.state]} at {fhir_datetime(alarm.time_us)}{value}",
    }
    if acknowledged is not None:
        who, at_us = acknowledged
        issue["mitigation"] = [
            {
                "action": {
                    "coding": [{"system": ALARM_ACTION, "code": "acknowledged"}],
                    "text": "Alarm acknowledged by a clinician",
                },
                "date": fhir_datetime(at_us),
                "author": {"identifier": {"system": ENDPOINT, "value": who}, "display": who},
            }
        ]
    return issue
