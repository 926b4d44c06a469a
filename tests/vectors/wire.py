"""Loader for tests/vectors/wire_v1.json (written by gen_wire_v1.py) and the neutral form of a
decoded vitals message that the Python and the page's tests both compare against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p2pmed.vitals import codec

VECTORS: dict[str, Any] = json.loads(Path(__file__).with_name("wire_v1.json").read_text())


def expand(segments: list[list[Any]]) -> bytes:
    return bytes.fromhex("".join(str(h) * int(n) for h, n in segments))


def ids(section: str) -> list[str]:
    return [v["name"] for v in VECTORS[section]]


def neutral(msg: codec.Message) -> dict[str, Any]:
    """A decoded codec message in the vectors' neutral form (raw fixed-point values)."""
    if isinstance(msg, codec.Numerics):
        out: dict[str, Any] = {"kind": "numerics", "timestamp_us": msg.timestamp_us}
        out["patient_id"] = msg.patient_id
        out.update({codec.FIELD_NAME[p]: msg.raw(p) for p in codec.Param})
        out["flags"] = int(msg.flags)
        return out
    if isinstance(msg, codec.Waveform):
        return {
            "kind": "waveform",
            "signal": msg.signal,
            "sample_rate": msg.sample_rate,
            "t0_us": msg.t0_us,
            "first_seq": msg.first_seq,
            "scale": msg.scale,
            "unit": msg.unit,
            "samples": list(msg.samples),
        }
    if isinstance(msg, codec.Alarm):
        return {
            "kind": "alarm",
            "alarm_id": msg.alarm_id,
            "priority": int(msg.priority),
            "state": int(msg.state),
            "category": int(msg.category),
            "time_us": msg.time_us,
            "value": msg.value,
            "condition": msg.condition,
            "patient_id": msg.patient_id,
        }
    if isinstance(msg, codec.AlarmAck):
        return {
            "kind": "alarm_ack",
            "alarm_id": msg.alarm_id,
            "time_us": msg.time_us,
            "who": msg.who,
        }
    if isinstance(msg, codec.DeviceMetric):
        return {
            "kind": "metric",
            "time_us": msg.time_us,
            "code": msg.code,
            "value": msg.value,
            "flags": int(msg.flags),
            "unit": msg.unit,
            "label": msg.label,
            "patient_id": msg.patient_id,
        }
    if isinstance(msg, codec.DeviceStatus):
        return {
            "kind": "device",
            "time_us": msg.time_us,
            "state": int(msg.state),
            "protocol": msg.protocol,
            "device_id": msg.device_id,
            "model": msg.model,
            "serial": msg.serial,
            "manufacturer": msg.manufacturer,
            "patient_reported": msg.patient_reported,
        }
    if isinstance(msg, codec.PatientStatus):
        return {
            "kind": "patient_status",
            "request_id": msg.request_id,
            "stream": int(msg.stream),
            "label": msg.label,
            "subject": msg.subject,
            "hr_source": msg.hr_source,
        }
    out = {"kind": "control", "command": int(msg.command), "request_id": msg.request_id}
    if msg.command in (codec.Command.START_STREAM, codec.Command.STOP_STREAM):
        out["signal"] = msg.signal
    elif msg.command is codec.Command.SET_ALARM_LIMIT:
        out.update(rule=msg.rule, limit=msg.limit)
    else:
        out["text"] = msg.text
    return out
