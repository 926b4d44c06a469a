"""Describing vitals messages without patient data, and the synthetic source's scenarios.

`summary` is what --json `sent`/`message` events say about a message (no label, no
subject); `label_of` is how a patient is named on a clinician's screen; `episodes` are the
scripted events of a synthetic source scenario.
"""

from __future__ import annotations

from typing import Any

from p2pmed.vitals.codec import (
    Alarm,
    AlarmAck,
    DeviceMetric,
    DeviceStatus,
    Message,
    Numerics,
    Param,
    PatientStatus,
    Waveform,
)
from p2pmed.vitals.sources import Episode

SCENARIOS = ("demo", "normal", "alarm")
UNIDENTIFIED = "unidentified patient"


def episodes(scenario: str) -> list[Episode]:
    if scenario == "normal":
        return []
    if scenario == "alarm":  # tachycardia from the first seconds on, for tests and demos
        return [Episode(Param.HR, 0.5, 3600.0, 160.0, ramp_s=0.5)]
    out: list[Episode] = []
    for k in range(48):  # "demo": a tachycardia and a desaturation every 3 minutes
        base = 30.0 + 180.0 * k
        out.append(Episode(Param.HR, base, 40.0, 140.0, ramp_s=8.0))
        out.append(Episode(Param.SPO2, base + 90.0, 45.0, 84.0, ramp_s=15.0))
    return out


def summary(msg: Message) -> dict[str, Any]:
    """A short, PHI-free description of a message for --json events."""
    if isinstance(msg, PatientStatus):  # the label is in "patient-status" events only
        return {"kind": "patient-status", "stream": msg.stream.name, "hr_source": msg.hr_source}
    if isinstance(msg, Waveform):
        return {
            "kind": "waveform",
            "signal": msg.signal,
            "first_seq": msg.first_seq,
            "n": len(msg.samples),
        }
    if isinstance(msg, Numerics):
        return {
            "kind": "numerics",
            "t_us": msg.timestamp_us,
            "values": {p.name.lower(): msg.value(p) for p in Param},
        }
    if isinstance(msg, Alarm):
        return {
            "kind": "alarm",
            "alarm_id": msg.alarm_id,
            "condition": msg.condition,
            "priority": msg.priority.name,
            "state": msg.state.name,
        }
    if isinstance(msg, AlarmAck):
        return {"kind": "alarm-ack", "alarm_id": msg.alarm_id, "who": msg.who}
    if isinstance(msg, DeviceMetric):
        return {
            "kind": "metric",
            "t_us": msg.time_us,
            "code": msg.code,
            "label": msg.label,
            "value": msg.value,
            "unit": msg.unit,
            "valid": msg.valid,
        }
    if isinstance(msg, DeviceStatus):  # the patient id the device reports is patient data
        return {
            "kind": "device",
            "state": msg.state.name,
            "protocol": msg.protocol,
            "device_id": msg.device_id,
            "model": msg.model,
            "serial": msg.serial,
            "manufacturer": msg.manufacturer,
            "patient_reported": bool(msg.patient_reported),
        }
    return {"kind": type(msg).__name__.lower()}


def label_of(st: PatientStatus | None) -> str:
    """The patient's name on a clinician's screen: its label, or that it has none."""
    return st.label if st is not None and st.label else UNIDENTIFIED
