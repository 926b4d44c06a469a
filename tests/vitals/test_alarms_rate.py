"""The alarm engine fed by a bedside device many times a second: trend rules still see the
highest value of their window, and the history they keep stays short."""

from __future__ import annotations

from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import Numerics, Param

T0 = 1_700_000_000.0


def test_trend_at_100_per_second() -> None:
    engine = AlarmEngine("p")
    raised = []
    for i in range(100 * 40):  # 40 s at 100 Hz: SpO2 97 for 10 s, then down 0.2 %/s
        t = T0 + i / 100
        spo2 = 97.0 if i < 1000 else 97.0 - 0.2 * (i - 1000) / 100
        n = Numerics.from_values(round(t * 1e6), "p", {Param.SPO2: spo2, Param.HR: 70.0})
        raised += [a.condition for a in engine.feed(n, t)]
    assert "spo2-falling" in raised  # 97 -> 93 in 20 s, within the 60 s window
    assert len(engine._history[Param.SPO2]) <= 60 / 0.25 + 2  # not 6000 entries


def test_a_short_peak_inside_a_bucket_is_kept() -> None:
    engine = AlarmEngine("p")
    out = []
    for i, v in enumerate([95.0, 99.0, 95.0, 94.0]):  # 99 lasts 10 ms
        t = T0 + i * 0.01
        out += engine.feed(Numerics.from_values(round(t * 1e6), "p", {Param.SPO2: v}), t)
    assert [a.condition for a in out] == ["spo2-falling"]  # 94 is 5 below the 99
