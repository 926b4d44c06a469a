"""position_at(t): where a source restarted at t picks up. Every message before it was due at
or before t, none from it on more than one chunk before t; both sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pmed.vitals.sources import SyntheticSource, WfdbReplay

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def _check(make, t: float) -> None:  # type: ignore[no-untyped-def]
    pos = make().position_at(t)
    stream = list(make().iter_from(0))
    assert all(due <= t for due, _ in stream[:pos])
    assert all(due > t - 0.1 - 1e-9 for due, _ in stream[pos:])  # 100 ms chunks
    assert [due for due, _ in make().iter_from(pos)] == [due for due, _ in stream[pos:]]


@pytest.mark.parametrize("elapsed", [0.0, 0.05, 1.0, 7.3, 59.99])
def test_synthetic(elapsed: float) -> None:
    def make() -> SyntheticSource:
        return SyntheticSource("p1", start_time=T0, duration_s=70.0)

    _check(make, T0 + elapsed)
    assert make().position_at(T0 - 5) == 0


def test_synthetic_unbounded_matches_the_bounded_stream() -> None:
    unbounded = SyntheticSource("p1", start_time=T0)
    bounded = SyntheticSource("p1", start_time=T0, duration_s=600.0)
    assert unbounded.position_at(T0 + 300.0) == bounded.position_at(T0 + 300.0)


@pytest.mark.parametrize("elapsed", [0.0, 2.5, 30.0, 1000.0])
def test_wfdb(elapsed: float) -> None:
    def make() -> WfdbReplay:
        return WfdbReplay(ROOT / "tests" / "data" / "mitdb208", start_time=T0, patient_id="p1")

    _check(make, T0 + elapsed)
