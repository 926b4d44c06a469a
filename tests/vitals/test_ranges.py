import pytest

from p2pmed.vitals.codec import Numerics, Param, StatusFlags, decode, encode, suspect_flag
from p2pmed.vitals.ranges import RANGES, mark_suspect, suspect_params

T = 1_700_000_000_000_000
NORMAL = {
    Param.HR: 72.0,
    Param.SYS: 120.0,
    Param.DIA: 80.0,
    Param.SPO2: 97.0,
    Param.TEMP: 36.8,
    Param.RR: 14.0,
}


def _n(**changes: float | None) -> Numerics:
    values: dict[Param, float | None] = dict(NORMAL)
    for name, v in changes.items():
        values[Param[name]] = v
    return Numerics.from_values(T, "p1", values)


def test_normal_values_not_suspect() -> None:
    n = _n()
    assert suspect_params(n) == set()
    assert mark_suspect(n) is n


@pytest.mark.parametrize(
    ("param", "inside", "outside"),
    [
        (Param.HR, 250.0, 250.1),
        (Param.HR, 30.0, 29.9),
        (Param.SPO2, 50.0, 49.99),
        (Param.SYS, 300.0, 300.1),
        (Param.SYS, 100.0, 39.9),
        (Param.DIA, 20.0, 19.9),
        (Param.DIA, 90.0, 200.1),
        (Param.TEMP, 45.0, 45.01),
        (Param.TEMP, 25.0, 24.99),
        (Param.RR, 80.0, 80.1),
        (Param.RR, 3.0, 2.9),
    ],
)
def test_bounds_inclusive_and_outside_marked(param: Param, inside: float, outside: float) -> None:
    kw = {param.name: inside}
    if param is Param.DIA:
        kw["SYS"] = 250.0
    assert param not in suspect_params(_n(**kw))
    kw[param.name] = outside
    marked = mark_suspect(_n(**kw))
    assert marked.suspect(param)
    # the value is kept exactly, not dropped or clamped
    assert marked.value(param) == pytest.approx(outside)
    assert marked.raw(param) == _n(**kw).raw(param)
    assert decode(encode(marked)) == marked


def test_spo2_above_100_is_suspect_not_clamped() -> None:
    marked = mark_suspect(_n(SPO2=101.5))
    assert marked.suspect(Param.SPO2)
    assert marked.value(Param.SPO2) == 101.5


def test_systolic_not_above_diastolic_marks_both() -> None:
    marked = mark_suspect(_n(SYS=80.0, DIA=85.0))
    assert marked.suspect(Param.SYS) and marked.suspect(Param.DIA)
    assert not marked.suspect(Param.HR)


def test_absent_values_not_marked_and_existing_flags_kept() -> None:
    n = Numerics.from_values(
        T, "p1", {Param.HR: 300.0}, flags=StatusFlags.SENSOR_FAULT | suspect_flag(Param.HR)
    )
    marked = mark_suspect(n)
    assert marked.flags == StatusFlags.SENSOR_FAULT | StatusFlags.SUSPECT_HR
    n = Numerics.from_values(T, "p1", {Param.SPO2: 20.0})
    assert mark_suspect(n).flags == StatusFlags.SUSPECT_SPO2
    assert all(r.low < r.high for r in RANGES.values())
