import itertools
from pathlib import Path

import numpy as np
import pytest
import wfdb

from p2pmed.core.errors import CodecError
from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import PLETH, AlarmState, Numerics, Param, Waveform, decode, encode
from p2pmed.vitals.sources import (
    SourceError,
    SyntheticSource,
    WfdbReplay,
    chunk_bounds,
    spo2_drop,
    tachycardia,
)

DATA = Path(__file__).resolve().parents[1] / "data"
RECORD = DATA / "mitdb208"
T0 = 1_700_000_000.0


def _take(src: SyntheticSource, seconds: float) -> list[tuple[float, object]]:
    return list(itertools.takewhile(lambda item: item[0] <= T0 + seconds, src))


def _waves(items: list[tuple[float, object]], signal: str) -> list[Waveform]:
    return [m for _, m in items if isinstance(m, Waveform) and m.signal == signal]


def _r_peaks(samples: np.ndarray, rate: int, threshold: float) -> np.ndarray:
    """Indices of local maxima above threshold, at least 0.25 s apart."""
    above = np.flatnonzero(
        (samples[1:-1] > threshold)
        & (samples[1:-1] >= samples[:-2])
        & (samples[1:-1] > samples[2:])
    ) + 1  # fmt: skip
    peaks: list[int] = []
    for i in above:
        if not peaks or i - peaks[-1] > 0.25 * rate:
            peaks.append(int(i))
    return np.array(peaks)


def test_chunk_bounds_exact() -> None:
    sizes = [b - a for a, b in (chunk_bounds(i, 125, 100) for i in range(10))]
    assert sizes == [12, 13] * 5
    assert chunk_bounds(9, 125, 100)[1] == 125
    assert chunk_bounds(0, 360, 100) == (0, 36)


def test_synthetic_deterministic_with_seed() -> None:
    a = _take(SyntheticSource(seed=7, start_time=T0), 3)
    b = _take(SyntheticSource(seed=7, start_time=T0), 3)
    c = _take(SyntheticSource(seed=8, start_time=T0), 3)
    assert a == b
    assert a != c


def test_synthetic_streams_are_contiguous_and_ordered() -> None:
    items = list(SyntheticSource("p1", start_time=T0, duration_s=5.0))
    dues = [t for t, _ in items]
    assert dues == sorted(dues)
    assert dues[-1] <= T0 + 5.0
    for signal, rate in (("II", 500), (PLETH, 125)):
        waves = _waves(items, signal)
        assert all(w.sample_rate == rate for w in waves)
        seq = 0
        for due, w in ((t, m) for t, m in items if isinstance(m, Waveform) and m.signal == signal):
            assert w.first_seq == seq
            assert w.t0_us == round((T0 + seq / rate) * 1e6)
            seq = w.seq_end()
            assert due == pytest.approx(T0 + seq / rate)  # due when the chunk is complete
        assert seq == 5 * rate
    assert [len(w.samples) for w in _waves(items, "II")][:3] == [50, 50, 50]
    numerics = [(t, m) for t, m in items if isinstance(m, Numerics)]
    assert [m.timestamp_us for _, m in numerics] == [round((T0 + k) * 1e6) for k in range(5)]
    assert all(t == m.timestamp_us / 1e6 for t, m in numerics)
    for _, m in items:
        assert decode(encode(m)) == m  # type: ignore[arg-type]


def test_synthetic_ecg_is_plausible() -> None:
    src = SyntheticSource(start_time=T0, duration_s=60.0, ecg_rate=250)
    items = list(src)
    ecg = np.concatenate([np.array(w.samples) * w.scale for w in _waves(items, "II")])
    assert len(ecg) == 60 * 250
    assert 0.9 < ecg.max() < 1.6  # R waves around 1.1 mV
    assert -0.6 < ecg.min() < -0.1  # S waves
    beats = len(_r_peaks(ecg, 250, 0.6))
    assert 66 <= beats <= 78  # 72 /min baseline
    pleth = np.concatenate([np.array(w.samples) * w.scale for w in _waves(items, PLETH)])
    assert len(pleth) == 60 * 125
    assert abs(len(_r_peaks(pleth, 125, 0.6)) - beats) <= 2  # one pulse per beat
    hr = [m.value(Param.HR) for _, m in items if isinstance(m, Numerics)]
    assert all(h is not None and 68 <= h <= 76 for h in hr)


def test_tachycardia_episode() -> None:
    src = SyntheticSource(
        start_time=T0, duration_s=90.0, episodes=[tachycardia(20.0, 60.0, hr=150.0)]
    )
    items = list(src)
    ecg = np.concatenate([np.array(w.samples) * w.scale for w in _waves(items, "II")])
    peaks = _r_peaks(ecg, 500, 0.6) / 500
    in_hold = np.count_nonzero((peaks >= 35) & (peaks < 65))  # 30 s of the plateau
    before = np.count_nonzero(peaks < 20)
    assert 70 <= in_hold <= 80  # 150 /min
    assert 21 <= before <= 27  # 72 /min
    hr = {
        round(m.timestamp_us / 1e6 - T0): m.value(Param.HR)
        for _, m in items
        if isinstance(m, Numerics)
    }
    assert hr[10] is not None and hr[10] < 80
    assert hr[50] is not None and hr[50] > 140


def test_spo2_drop_triggers_alarms() -> None:
    src = SyntheticSource("p1", start_time=T0, duration_s=120.0, episodes=[spo2_drop(30.0, 60.0)])
    engine = AlarmEngine("p1")
    raised: dict[str, float] = {}
    for due, m in src:
        if isinstance(m, Numerics):
            for a in engine.feed(m, due):
                if a.state is AlarmState.ACTIVE:
                    raised.setdefault(a.condition, due - T0)
    assert set(raised) >= {"spo2-low", "spo2-falling"}
    assert all(30 < t < 90 for t in raised.values())
    assert src.value_at(Param.SPO2, 60.0) == 82.0


def test_synthetic_rejects_bad_config() -> None:
    with pytest.raises(CodecError):
        SyntheticSource(ecg_rate=200)
    with pytest.raises(CodecError):
        SyntheticSource(pleth_rate=250)
    with pytest.raises(CodecError):
        SyntheticSource(ecg_lead="Z9")
    with pytest.raises(SourceError):
        SyntheticSource(chunk_ms=0)
    with pytest.raises(SourceError):
        SyntheticSource(duration_s=0)
    items = list(SyntheticSource(duration_s=1.0, ecg_rate=1000, chunk_ms=40))
    assert sum(len(w.samples) for w in _waves(items, "II")) == 1000
    assert len(_waves(items, "II")[0].samples) == 40


# -- WFDB replay --------------------------------------------------------------------------


def test_wfdb_replay_bit_exact() -> None:
    rec = wfdb.rdrecord(str(RECORD), physical=False)
    replay = WfdbReplay(RECORD, start_time=T0, first_seq=5)
    assert replay.sample_rate == 360
    assert replay.signal == "MLII"
    items = list(replay)
    assert len(items) == 600  # 60 s in 100 ms chunks of 36 samples
    samples = np.concatenate([np.array(m.samples, dtype=np.int64) for _, m in items])
    assert np.array_equal(samples, rec.d_signal[:, 0].astype(np.int64) - 1024)
    seq = 5
    for due, m in items:
        assert (m.signal, m.sample_rate, m.unit, len(m.samples)) == ("MLII", 360, "mV", 36)
        assert m.first_seq == seq
        assert m.t0_us == round((T0 + (seq - 5) / 360) * 1e6)
        seq = m.seq_end()
        assert due == pytest.approx(T0 + (seq - 5) / 360)
        assert decode(encode(m)) == m
    assert m.scale == pytest.approx(1 / 200, rel=1e-7)
    physical = wfdb.rdrecord(str(RECORD)).p_signal[:, 0]
    assert np.allclose(samples * m.scale, physical, rtol=0, atol=1e-6)


def test_wfdb_record_matches_published_scipy_excerpt() -> None:
    # scipy.misc.electrocardiogram()[:3] as printed in scipy's documentation
    physical = wfdb.rdrecord(str(RECORD)).p_signal[:3, 0]
    assert np.allclose(physical, [-0.245, -0.215, -0.185], atol=1e-12)
    header = (DATA / "README.md").read_text()
    assert "ODC-By 1.0" in header and "Moody" in header


def test_wfdb_replay_chunking() -> None:
    items = list(WfdbReplay(RECORD, chunk_ms=1000))
    assert len(items) == 60 and all(len(m.samples) == 360 for _, m in items)
    items = list(WfdbReplay(RECORD, chunk_ms=70))  # 25.2 samples: 25 or 26, no drift
    assert sum(len(m.samples) for _, m in items) == 21600
    assert {len(m.samples) for _, m in items[:-1]} == {25, 26}
    assert len(items[-1][1].samples) == 21600 - items[-1][1].first_seq  # the short tail


def test_wfdb_replay_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as exc:
        WfdbReplay(tmp_path / "missing")
    assert exc.value.reason == "record"
    with pytest.raises(SourceError) as exc:
        WfdbReplay(RECORD, channel="V5")
    assert exc.value.reason == "channel"
    with pytest.raises(SourceError):
        WfdbReplay(RECORD, chunk_ms=0)
    d = np.zeros((100, 1), dtype=np.int64)

    def write(name: str, fs: float, baseline: int = 0, sig: str = "MLII") -> Path:
        wfdb.wrsamp(
            name, fs=fs, units=["mV"], sig_name=[sig], d_signal=d + baseline, fmt=["16"],
            adc_gain=[200.0], baseline=[baseline], write_dir=str(tmp_path),
        )  # fmt: skip
        return tmp_path / name

    with pytest.raises(SourceError) as exc:
        WfdbReplay(write("frac", 360.5))
    assert exc.value.reason == "rate"
    with pytest.raises(CodecError) as cexc:
        WfdbReplay(write("slow", 100))  # 100 Hz is too slow for an ECG lead
    assert cexc.value.reason == "rate"
    with pytest.raises(CodecError):
        WfdbReplay(write("odd", 360, sig="EEG"))
    assert len(list(WfdbReplay(write("odd2", 360, sig="EEG"), signal="II"))) == 3


def test_make_script_writes_exact_record(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_mitbih208", DATA / "make_mitbih208.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    raw = np.random.default_rng(1).integers(0, 2048, 300 * 360).astype(np.uint16)
    np.savez(tmp_path / "ecg.npz", ecg=raw)
    mod.main(["--ecg-dat", str(tmp_path / "ecg.npz"), "--seconds", "2", "--out", str(tmp_path)])
    replay = WfdbReplay(tmp_path / "mitdb208")
    got = np.concatenate([np.array(m.samples) for _, m in replay])
    assert np.array_equal(got, raw[:720].astype(np.int64) - 1024)
    np.savez(tmp_path / "short.npz", ecg=raw[:100])
    with pytest.raises(SystemExit):
        mod.main(["--ecg-dat", str(tmp_path / "short.npz"), "--out", str(tmp_path)])


def _same(a: list[tuple[float, object]], b: list[tuple[float, object]]) -> bool:
    return [(d, encode(m)) for d, m in a] == [(d, encode(m)) for d, m in b]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunk_ms", "pleth_rate"),
    [(100, 125), (7, 125), (1000, 125), (9, 100)],  # 7 ms, 9 ms: some pleth chunks empty
)
def test_iter_from_matches_dropping_the_first_messages(chunk_ms: int, pleth_rate: int) -> None:
    eps = [tachycardia(3.0, 20.0, 150.0), spo2_drop(5.0, 10.0)]
    src = SyntheticSource(
        "p1", seed=4, start_time=T0, chunk_ms=chunk_ms, pleth_rate=pleth_rate, episodes=eps
    )
    ref = list(itertools.islice(src, 3000))
    for skip in [0, 1, 2, 3, 4, 5, 6, 21, 22, 23, 24, 25, 26, 700, 1501, 2400]:
        got = list(itertools.islice(src.iter_from(skip), 600))
        assert _same(got, ref[skip : skip + 600]), skip


def test_seek_to_a_time_yields_the_unseeked_stream_from_that_time() -> None:
    src = SyntheticSource("p1", seed=2, start_time=T0, episodes=[tachycardia(10.0, 30.0)])
    ref = list(itertools.islice(src, 21 * 60))
    for t in (T0 + 0.05, T0 + 1.0, T0 + 12.34, T0 + 37.0):
        before = sum(1 for due, _ in ref if due < t)
        got = list(itertools.islice(src.iter_from(before), 100))
        assert got[0][0] >= t
        assert _same(got, [item for item in ref if item[0] >= t][:100])


def test_iter_from_with_a_duration_and_past_the_end() -> None:
    src = SyntheticSource("p1", start_time=T0, duration_s=2.55, chunk_ms=100)
    ref = list(src)
    assert _same(list(src.iter_from(17)), ref[17:])
    assert list(src.iter_from(len(ref) + 5)) == []


def test_iter_from_rejects_a_negative_skip() -> None:
    with pytest.raises(SourceError) as info:
        SyntheticSource().iter_from(-1)
    assert info.value.reason == "skip"
    with pytest.raises(SourceError):
        WfdbReplay(RECORD, chunk_ms=250).iter_from(-3)


def test_wfdb_iter_from_matches_dropping_the_first_chunks() -> None:
    replay = WfdbReplay(RECORD, chunk_ms=250, start_time=T0)
    ref = list(itertools.islice(replay, 60))
    assert _same(list(itertools.islice(replay.iter_from(13), 47)), ref[13:])  # type: ignore[arg-type]
