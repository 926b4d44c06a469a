"""Every typed node event prints exactly as the named event it replaced: the line a typed
event gives through Events.publish equals the line the old Events.emit(name, **fields) gave."""

from __future__ import annotations

import inspect
import io
import json
from typing import Any

from p2pmed.node import events as ne
from p2pmed.node.output import Events
from p2pmed.vitals.codec import Numerics
from p2pmed.vitals.summary import summary

NUMERICS = summary(Numerics(1_000_000, "p1", hr_x10=720, spo2_x100=9700))
NUMERICS["hr_source"] = "synthetic"

# (typed event, the name and keyword fields the role used to emit)
CASES: list[tuple[ne.NodeEvent, str, dict[str, Any]]] = [
    (ne.HrDetectionInThread("no fork"), "hr-detection-in-thread", {"reason": "no fork"}),
    (ne.SourceStarted(3, None), "source-started", {"skip": 3, "hr_source": None}),
    (ne.SourceGap(70_000, 3000.5), "source-gap", {"skipped": 70_000, "seconds": 3000.5}),
    (ne.SourceEnded(40), "source-ended", {"messages": 40}),
    (
        ne.MessageSent("c1", 9, "HIGH", 33, 123456, NUMERICS),
        "sent",
        {"peer": "c1", "id": 9, "cls": "HIGH", "len": 33, "crc": 123456, **NUMERICS},
    ),
    (
        ne.AlarmSent(4, "HR high", "HIGH", "ACTIVE", "PHYSIOLOGICAL", 160.0),
        "alarm",
        {
            "alarm_id": 4,
            "condition": "HR high",
            "priority": "HIGH",
            "state": "ACTIVE",
            "category": "PHYSIOLOGICAL",
            "value": 160.0,
        },
    ),
    (ne.ControlApplied("c1", "SILENCE"), "control", {"peer": "c1", "command": "SILENCE"}),
    (
        ne.UnexpectedMessage("c1", {"kind": "waveform", "signal": "II", "first_seq": 0, "n": 2}),
        "unexpected",
        {"peer": "c1", "kind": "waveform", "signal": "II", "first_seq": 0, "n": 2},
    ),
    (
        ne.AlarmAcked(4, "c1", True, None),
        "alarm-ack",
        {"alarm_id": 4, "by": "c1", "first": True, "latency_ms": None},
    ),
    (ne.PeerWaiting("p1", "patient"), "peer-waiting", {"peer": "p1", "role": "patient"}),
    (ne.Admitted("p1"), "admit", {"peer": "p1"}),
    (
        ne.MessageDelivered("p1", 9, "HIGH", 2, "store", 33, 7, 1.5, True, NUMERICS),
        "message",
        {
            "peer": "p1",
            "id": 9,
            "cls": "HIGH",
            "seq": 2,
            "path": "store",
            "len": 33,
            "crc": 7,
            "latency_ms": 1.5,
            "replayed": True,
            **NUMERICS,
        },
    ),
    (ne.WaveformGap("II", 50, 100), "waveform-gap", {"signal": "II", "expected": 50, "got": 100}),
    (
        ne.AlarmReceived("p1", 4, "HR high", "HIGH", "ACTIVE", "PHYSIOLOGICAL", None, 2.0),
        "alarm",
        {
            "peer": "p1",
            "alarm_id": 4,
            "condition": "HR high",
            "priority": "HIGH",
            "state": "ACTIVE",
            "category": "PHYSIOLOGICAL",
            "value": None,
            "latency_ms": 2.0,
        },
    ),
    (ne.AlarmAckedElsewhere(4, "c2"), "alarm-acked-elsewhere", {"alarm_id": 4, "by": "c2"}),
    (
        ne.PatientStatusReceived("p1", None, "unidentified patient", "STREAMING", "wfdb", None),
        "patient-status",
        {
            "peer": "p1",
            "label": None,
            "shown_as": "unidentified patient",
            "stream": "STREAMING",
            "hr_source": "wfdb",
            "subject": None,
        },
    ),
    (ne.StreamEnded("p1", "bed 4"), "stream-ended", {"peer": "p1", "label": "bed 4"}),
    (
        ne.FhirSubjectDefault("p1", "Patient/p1"),
        "fhir-subject-default",
        {"peer": "p1", "subject": "Patient/p1"},
    ),
    (ne.AckSent("p1", 4), "ack-sent", {"peer": "p1", "alarm_id": 4}),
    (ne.NodeErrorEvent("join", "refused"), "error", {"code": "join", "message": "refused"}),
    (ne.OutputDropped(12), "output-dropped", {"count": 12}),
]


def _printed(send: Any) -> tuple[str, dict[str, Any]]:
    out = io.StringIO()
    events = Events(json_out=True, stream=out)
    heard: list[dict[str, Any]] = []
    events.listeners.append(heard.append)
    send(events)
    text = out.getvalue()
    record = json.loads(text)
    assert isinstance(record.pop("ts"), float)
    (listened,) = heard
    listened = {k: v for k, v in listened.items() if k != "ts"}
    return json.dumps(record, separators=(",", ":")), listened


def test_typed_role_events_print_as_the_named_ones() -> None:
    for event, name, old in CASES:
        typed = _printed(lambda e, ev=event: e.publish(ev))
        named = _printed(lambda e, n=name, f=old: e.emit(n, **f))
        assert typed == named, name
        assert list(json.loads(typed[0])) == ["event", *old], name  # same keys, same order


def test_every_role_event_class_is_covered() -> None:
    source = inspect.getsource(ne)
    start = source.index("# ---- the patient role ----")
    added = {
        cls
        for cls in vars(ne).values()
        if inspect.isclass(cls)
        and issubclass(cls, ne.NodeEvent)
        and cls is not ne.NodeEvent
        and source.index(f"class {cls.__name__}(") > start
    }
    assert len(added) == 19
    assert added <= {type(event) for event, _, _ in CASES}
