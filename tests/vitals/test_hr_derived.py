"""Heart rate derived from a replayed ECG (WFDB records carry no numerics).

The reference is tests/data/mitdb208.ref: beat times checked by hand (see
make_mitdb208_ref.py; no cardiologist .atr ships with scipy's excerpt of record 208)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb  # type: ignore[import-untyped]

from p2pmed.vitals import hr
from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import AlarmCategory, AlarmState, Numerics, Param, Waveform
from p2pmed.vitals.sources import WfdbReplay

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = 1_700_000_000.0


def _copy(tmp_path: Path, with_atr: bool) -> Path:
    for ext in ("hea", "dat"):
        shutil.copy(DATA / f"mitdb208.{ext}", tmp_path / f"mitdb208.{ext}")
    if with_atr:
        shutil.copy(DATA / "mitdb208.ref", tmp_path / "mitdb208.atr")
    return tmp_path / "mitdb208"


def _reference() -> hr.BeatTrack:
    ann = wfdb.rdann(str(DATA / "mitdb208"), "ref")
    return hr.BeatTrack("reference", 360.0, np.asarray(ann.sample, dtype=np.int64))


def _numerics(replay: WfdbReplay) -> list[tuple[float, Numerics]]:
    return [(due, m) for due, m in replay if isinstance(m, Numerics)]


def test_detector_hr_within_5_bpm_of_the_hand_checked_reference(tmp_path: Path) -> None:
    replay = WfdbReplay(_copy(tmp_path, with_atr=False), start_time=T0, patient_id="p1")
    assert replay.hr_source == "ecg-detector"
    ref = _reference()
    readings = _numerics(replay)
    assert [due for due, _ in readings] == [T0 + k for k in range(1, 61)]
    compared = 0
    for k, (_, n) in enumerate(readings, start=1):
        expected, got = ref.hr_at(k), n.value(Param.HR)
        if expected is None:  # the first second, and the artifact at 42.4-44.1 s
            continue
        assert got is not None, k
        assert abs(got - expected) <= 5.0, (k, got, expected)
        compared += 1
    assert compared >= 55
    assert max(n.value(Param.HR) or 0 for _, n in readings) > 120  # record 208 runs fast


def test_annotations_are_used_when_the_record_has_them(tmp_path: Path) -> None:
    replay = WfdbReplay(_copy(tmp_path, with_atr=True), start_time=T0, patient_id="p1")
    assert replay.hr_source == "annotations"
    ref = _reference()
    for k, (_, n) in enumerate(_numerics(replay), start=1):
        expected = ref.hr_at(k)
        got = n.value(Param.HR)
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, abs=0.05)


def test_numerics_interleave_with_the_waveform_and_seek_exactly(tmp_path: Path) -> None:
    replay = WfdbReplay(_copy(tmp_path, with_atr=False), start_time=T0, patient_id="p1")
    items = list(replay)
    assert sum(isinstance(m, Numerics) for _, m in items) == 60
    waves = [m for _, m in items if isinstance(m, Waveform)]
    assert sum(len(w.samples) for w in waves) == 21600
    dues = [due for due, _ in items]
    assert dues == sorted(dues)
    for skip in (0, 1, 10, 11, 12, 333, len(items) - 1, len(items)):
        got = list(replay.iter_from(skip))
        assert [(d, m) for d, m in got] == items[skip:], skip
    assert WfdbReplay(DATA / "mitdb208").hr_source is None  # no patient id: waveform only


def _write(tmp_path: Path, name: str, mv: np.ndarray) -> Path:
    digital = np.rint(mv * 200).astype(np.int64)[:, None]
    wfdb.wrsamp(
        name, fs=360, units=["mV"], sig_name=["MLII"], d_signal=digital, fmt=["16"],
        adc_gain=[200.0], baseline=[0], write_dir=str(tmp_path),
    )  # fmt: skip
    return tmp_path / name


@pytest.mark.parametrize("kind", ["flat", "noise", "small-noise"])
def test_no_hr_from_a_flat_line_or_noise_and_the_engine_says_so(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    mv = {
        "flat": np.zeros(30 * 360),
        "noise": rng.standard_normal(30 * 360) * 0.3,
        "small-noise": rng.standard_normal(30 * 360) * 0.02,
    }[kind]
    replay = WfdbReplay(_write(tmp_path, kind, mv), start_time=T0, patient_id="p1")
    readings = _numerics(replay)
    assert len(readings) == 30
    assert all(n.value(Param.HR) is None for _, n in readings)
    engine = AlarmEngine("p1", expected=(Param.HR,))
    alarms = [a for due, n in readings for a in engine.feed(n, due)]
    assert [(a.condition, a.state, a.category) for a in alarms] == [
        ("hr-unavailable", AlarmState.ACTIVE, AlarmCategory.TECHNICAL)
    ]
    assert alarms[0].time_us == round((T0 + 3) * 1e6)  # after 3 readings without HR


def test_derived_hr_drives_the_alarm_engine(tmp_path: Path) -> None:
    replay = WfdbReplay(_copy(tmp_path, with_atr=False), start_time=T0, patient_id="p1")
    engine = AlarmEngine("p1", expected=(Param.HR,))
    alarms = [a for due, n in _numerics(replay) for a in engine.feed(n, due)]
    conditions = [(a.condition, a.state) for a in alarms]
    assert ("hr-high", AlarmState.ACTIVE) in conditions  # HR above 120 /min at 13-19 s
    assert ("hr-high", AlarmState.CLEARED) in conditions
    assert not [a for a in alarms if a.condition == "hr-unavailable"]  # one gap (44 s) only


def test_unavailable_clears_when_hr_returns() -> None:
    engine = AlarmEngine("p1", expected=(Param.HR,))
    empty = [Numerics(round((T0 + k) * 1e6), "p1") for k in range(4)]
    raised = [a for k, n in enumerate(empty) for a in engine.feed(n, T0 + k)]
    assert [a.state for a in raised] == [AlarmState.ACTIVE]
    back = Numerics.from_values(round((T0 + 5) * 1e6), "p1", {Param.HR: 80.0})
    cleared = engine.feed(back, T0 + 5)
    assert [(a.condition, a.state) for a in cleared] == [("hr-unavailable", AlarmState.CLEARED)]
    assert engine.feed(empty[0], T0 + 6) == [] and engine.feed(empty[0], T0 + 7) == []


@pytest.mark.parametrize("seed", range(5))
def test_white_noise_never_gives_a_reading(seed: int) -> None:
    # on noise the two detectors can pick the same spikes (bSQI up to 0.94 here): the
    # QRS-band kurtosis check is what refuses it
    mv = np.random.default_rng(seed).standard_normal(30 * 360)
    track = hr.from_ecg(mv, 360.0)
    assert [track.hr_at(k) for k in range(1, 31)] == [None] * 30
    assert max(track.kurtosis(k) for k in range(10, 31)) < hr.MIN_KURTOSIS


@pytest.mark.parametrize("noise_mv", [0.05, 0.2])
def test_detector_hr_holds_with_added_noise(noise_mv: float) -> None:
    ecg = wfdb.rdrecord(str(DATA / "mitdb208")).p_signal[:, 0]
    noisy = ecg + np.random.default_rng(1).standard_normal(len(ecg)) * noise_mv
    track, ref = hr.from_ecg(noisy, 360.0), _reference()
    compared = 0
    for k in range(1, 61):
        expected = ref.hr_at(k)
        if expected is not None:
            got = track.hr_at(k)
            assert got is not None and abs(got - expected) <= 5.0, (k, got, expected)
            compared += 1
    assert compared >= 55
