"""Vitals sources: iterators of (due_time_s, message).

A source never sleeps: the caller (the async node) waits until `due_time_s` and then sends
the message. due_time_s is when the data would be complete at a real bedside device: the
end of a waveform chunk, or the instant of a numerics reading.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2pmed.core.errors import ProtocolError
from p2pmed.vitals import hr
from p2pmed.vitals.codec import ECG_LEADS, PLETH, Message, Numerics, Param, Waveform
from p2pmed.vitals.ranges import mark_suspect


class SourceError(ProtocolError):
    """A record or configuration a source cannot replay faithfully."""

    kind = "source"


def _us(t: float) -> int:
    return round(t * 1_000_000)


def chunk_bounds(i: int, rate: int, chunk_ms: int) -> tuple[int, int]:
    """Sample index range [a, b) of chunk i when chunks are `chunk_ms` long. Exact integer
    arithmetic: 125 Hz in 100 ms chunks alternates 12 and 13 samples, with no drift."""
    return i * rate * chunk_ms // 1000, (i + 1) * rate * chunk_ms // 1000


# ---------------------------------------------------------------------------------------
# Synthetic generator


@dataclass(frozen=True)
class Episode:
    """A scripted change of one parameter: ramps from baseline to `target` over `ramp_s`,
    holds, and ramps back so that it is at baseline again at start_s + duration_s."""

    param: Param
    start_s: float
    duration_s: float
    target: float
    ramp_s: float = 10.0

    def weight(self, t: float) -> float:
        rel = t - self.start_s
        if rel <= 0 or rel >= self.duration_s:
            return 0.0
        ramp = min(self.ramp_s, self.duration_s / 2)
        if ramp <= 0:
            return 1.0
        return min(1.0, rel / ramp, (self.duration_s - rel) / ramp)


def tachycardia(start_s: float, duration_s: float, hr: float = 140.0) -> Episode:
    return Episode(Param.HR, start_s, duration_s, hr)


def spo2_drop(start_s: float, duration_s: float, spo2: float = 82.0) -> Episode:
    return Episode(Param.SPO2, start_s, duration_s, spo2, ramp_s=20.0)


BASELINE: dict[Param, float] = {
    Param.HR: 72.0,
    Param.SYS: 120.0,
    Param.DIA: 80.0,
    Param.SPO2: 98.0,
    Param.TEMP: 36.8,
    Param.RR: 14.0,
}
# numerics noise (standard deviation) and reporting resolution, per parameter
_NOISE = {
    Param.HR: 0.7,
    Param.SYS: 2.0,
    Param.DIA: 1.5,
    Param.SPO2: 0.4,
    Param.TEMP: 0.02,
    Param.RR: 0.5,
}
_RESOLUTION = {Param.TEMP: 0.1}

# PQRST as Gaussians (McSharry et al. 2003 angles and widths, amplitudes in mV).
# Offsets from the R peak and widths scale with sqrt(RR) (Bazett), as in ECGSYN.
_PQRST_THETA = np.array([-math.pi / 3, -math.pi / 12, 0.0, math.pi / 12, math.pi / 2])
_PQRST_WIDTH = np.array([0.25, 0.1, 0.1, 0.1, 0.4])
_PQRST_AMP_MV = np.array([0.12, -0.12, 1.1, -0.25, 0.3])
# pleth pulse: systolic peak and dicrotic wave after the R peak (s at RR = 1 s), normalized
_PLETH_OFFSET = np.array([0.25, 0.45])
_PLETH_WIDTH = np.array([0.07, 0.08])
_PLETH_AMP = np.array([1.0, 0.35])

ECG_SCALE_MV = 0.001  # 1 uV per LSB
PLETH_SCALE = 0.001


class SyntheticSource:
    """Deterministic synthetic patient: ECG, pleth and numerics, with scripted episodes.

    Iterating yields (due_time_s, message) in due-time order: a WAVEFORM chunk per signal
    every `chunk_ms`, and a NUMERICS every second. Same seed, same output.
    """

    def __init__(
        self,
        patient_id: str = "demo-patient",
        *,
        seed: int = 0,
        start_time: float = 0.0,
        duration_s: float | None = None,
        ecg_rate: int = 500,
        ecg_lead: str = "II",
        pleth_rate: int = 125,
        chunk_ms: int = 100,
        episodes: Sequence[Episode] = (),
    ) -> None:
        if not 1 <= chunk_ms <= 1000:
            raise SourceError("chunk", "chunk_ms must be 1..1000")
        if duration_s is not None and duration_s <= 0:
            raise SourceError("duration", "duration_s must be > 0")
        self.patient_id = patient_id
        self.seed = seed
        self.start_time = start_time
        self.duration_s = duration_s
        self.ecg_rate = ecg_rate
        self.ecg_lead = ecg_lead
        self.pleth_rate = pleth_rate
        self.chunk_ms = chunk_ms
        self.episodes = tuple(episodes)
        self._by_param = {p: tuple(ep for ep in self.episodes if ep.param is p) for p in Param}
        # fail early on rates or lead names the codec would reject
        Waveform(ecg_lead, ecg_rate, 0, 0, ECG_SCALE_MV, "mV", (0,))
        Waveform(PLETH, pleth_rate, 0, 0, PLETH_SCALE, "1", (0,))

    def value_at(self, param: Param, t: float) -> float:
        """Scripted (noise-free) value of a parameter at t seconds after the start."""
        value = BASELINE[param]
        for ep in self._by_param[param]:
            if (w := ep.weight(t)) > 0:
                value = BASELINE[param] + w * (ep.target - BASELINE[param])
        return value

    def __iter__(self) -> Iterator[tuple[float, Message]]:
        return self.iter_from(0)

    def iter_from(self, skip: int) -> Iterator[tuple[float, Message]]:
        """The stream without its first `skip` messages, identical to iterating and dropping
        them. Without a duration the generator state is computed directly (random streams
        advanced in bulk, beat times walked), not by generating the skipped chunks; the
        work is done here, eagerly, so a caller can run it off the event loop."""
        if skip < 0:
            raise SourceError("skip", "skip must be >= 0")
        if self.duration_s is not None:  # rare (tests, benches): plain regeneration
            return itertools.islice(self._chunks(0), skip, None)
        lo, hi = 0, 1
        while self._messages_before(hi) <= skip:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # last chunk index whose preceding messages are <= skip
            mid = (lo + hi) // 2
            if self._messages_before(mid) <= skip:
                lo = mid
            else:
                hi = mid
        return itertools.islice(self._chunks(lo), skip - self._messages_before(lo), None)

    def position_at(self, t: float) -> int:
        """Where this stream picks up when it is restarted at t instead of delivering what was
        due while it was stopped: every message before it is due at or before t, every one
        from it on at most one chunk before t."""
        if t <= self.start_time:
            return 0
        return self._messages_before(int((t - self.start_time) * 1000 // self.chunk_ms))

    def _messages_before(self, i: int) -> int:
        """Messages yielded by chunks 0..i-1 (no duration limit)."""
        numerics = math.floor(i * self.chunk_ms / 1000) + 1 if i > 0 else 0
        waves = 0
        for rate in (self.ecg_rate, self.pleth_rate):
            waves += min(i, chunk_bounds(i, rate, self.chunk_ms)[0])  # empty chunks skipped
        return numerics + waves

    def _chunks(self, first: int) -> Iterator[tuple[float, Message]]:
        """Generator from chunk `first` on; the state at that chunk is computed now, before
        the generator is returned (the same way the loop would have computed it)."""
        beat_rng = np.random.default_rng([self.seed, 1])
        noise_rng = np.random.default_rng([self.seed, 2])
        num_rng = np.random.default_rng([self.seed, 3])
        beats: list[tuple[float, float]] = []  # (R time, RR) in seconds since start
        next_r = 0.25
        next_numerics = 0
        if first > 0:
            w_start = first * self.chunk_ms / 1000
            while next_r < w_start + 1.5:
                rr = self._next_rr(next_r, beat_rng)
                if next_r > w_start - 2.0:
                    beats.append((next_r, rr))
                next_r += rr
            next_numerics = math.floor(w_start) + 1
            _skip_normals(num_rng, next_numerics * len(Param))
            _skip_normals(noise_rng, chunk_bounds(first, self.ecg_rate, self.chunk_ms)[0])
        rngs = (beat_rng, noise_rng, num_rng)
        return self._generate(first, rngs, beats, next_r, next_numerics)

    def _generate(
        self,
        first: int,
        rngs: tuple[np.random.Generator, np.random.Generator, np.random.Generator],
        beats: list[tuple[float, float]],
        next_r: float,
        next_numerics: int,
    ) -> Iterator[tuple[float, Message]]:
        beat_rng, noise_rng, num_rng = rngs
        end = self.duration_s
        for i in itertools.count(first):
            w_start = i * self.chunk_ms / 1000
            w_end = (i + 1) * self.chunk_ms / 1000
            if end is not None and w_start >= end:
                return
            while next_r < w_end + 1.5:
                rr = self._next_rr(next_r, beat_rng)
                beats.append((next_r, rr))
                next_r += rr
            beats = [b for b in beats if b[0] > w_start - 2.0]
            out: list[tuple[float, Message]] = []
            while next_numerics <= w_end and (end is None or next_numerics < end):
                out.append(
                    (self.start_time + next_numerics, self._numerics(next_numerics, num_rng))
                )
                next_numerics += 1
            for sig, rate in ((self.ecg_lead, self.ecg_rate), (PLETH, self.pleth_rate)):
                a, b = chunk_bounds(i, rate, self.chunk_ms)
                if end is not None:
                    b = min(b, math.ceil(end * rate))
                if b <= a:
                    continue
                t = np.arange(a, b) / rate
                if sig == PLETH:
                    wave = self._pleth(t, beats)
                    scale, unit = PLETH_SCALE, "1"
                else:
                    wave = self._ecg(t, beats, noise_rng)
                    scale, unit = ECG_SCALE_MV, "mV"
                samples = np.clip(np.rint(wave / scale), -32768, 32767).astype(np.int16)
                msg = Waveform(
                    sig,
                    rate,
                    _us(self.start_time + a / rate),
                    a,
                    scale,
                    unit,
                    tuple(int(s) for s in samples),
                )
                out.append((self.start_time + b / rate, msg))
            out.sort(key=lambda item: item[0])
            yield from out

    def _next_rr(self, r: float, rng: np.random.Generator) -> float:
        rr = 60.0 / self.value_at(Param.HR, r)
        return rr * (1.0 + 0.02 * float(np.clip(rng.standard_normal(), -3, 3)))

    def _ecg(
        self, t: np.ndarray, beats: list[tuple[float, float]], rng: np.random.Generator
    ) -> np.ndarray:
        r = np.array([b[0] for b in beats])[:, None]
        sq = np.sqrt(np.array([b[1] for b in beats]))[:, None]
        centers = (r + _PQRST_THETA / (2 * math.pi) * sq).ravel()
        sigmas = (_PQRST_WIDTH / (2 * math.pi) * sq).ravel()
        amps = np.tile(_PQRST_AMP_MV, len(beats))
        z = amps * np.exp(-0.5 * ((t[:, None] - centers) / sigmas) ** 2)
        wander = 0.05 * np.sin(2 * math.pi * 0.3 * t)
        return np.asarray(z.sum(axis=1) + wander + 0.01 * rng.standard_normal(len(t)))

    def _pleth(self, t: np.ndarray, beats: list[tuple[float, float]]) -> np.ndarray:
        r = np.array([b[0] for b in beats])[:, None]
        sq = np.sqrt(np.array([b[1] for b in beats]))[:, None]
        centers = (r + _PLETH_OFFSET * sq).ravel()
        sigmas = (_PLETH_WIDTH * sq).ravel()
        amps = np.tile(_PLETH_AMP, len(beats))
        z = amps * np.exp(-0.5 * ((t[:, None] - centers) / sigmas) ** 2)
        return np.asarray(z.sum(axis=1))

    def _numerics(self, t: float, rng: np.random.Generator) -> Numerics:
        values: dict[Param, float] = {}
        for p in Param:
            v = self.value_at(p, t) + _NOISE[p] * float(np.clip(rng.standard_normal(), -3, 3))
            res = _RESOLUTION.get(p, 1.0)
            values[p] = round(v / res) * res
        values[Param.SPO2] = min(100.0, values[Param.SPO2])
        n = Numerics.from_values(_us(self.start_time + t), self.patient_id, dict(values))
        return mark_suspect(n)


def _skip_normals(rng: np.random.Generator, n: int) -> None:
    """Advance rng past n standard normals (the stream does not depend on how draws are
    grouped, so drawing them in bulk matches drawing them one by one)."""
    while n > 0:
        k = min(n, 1 << 20)
        rng.standard_normal(k)
        n -= k


# ---------------------------------------------------------------------------------------
# WFDB record replay


class WfdbReplay:
    """Replays one channel of a PhysioNet WFDB record as WAVEFORM chunks.

    Samples are the record's digital values minus its ADC baseline, sent as int16 with
    scale = 1 / adc_gain (physical units per LSB), so the receiver gets the record's
    physical signal exactly as wfdb computes it.

    Given a `patient_id`, an ECG replay also yields a NUMERICS every second with the heart
    rate derived from the record (see hr.py: its beat annotations if it has a `.atr`, else
    QRS detection), and HR absent when none can be derived; `hr_source` says which. The
    detection runs here, in the constructor (build the replay off the event loop), unless
    `beats` brings a track computed elsewhere (beat_track() in another process).
    """

    def __init__(
        self,
        record: str | Path,
        *,
        channel: str | None = None,
        signal: str | None = None,
        chunk_ms: int = 100,
        start_time: float = 0.0,
        first_seq: int = 0,
        patient_id: str | None = None,
        beats: hr.BeatTrack | None = None,
    ) -> None:
        import wfdb  # type: ignore[import-untyped]  # imported here: it is slow to import and only replay needs it

        if not 1 <= chunk_ms <= 1000:
            raise SourceError("chunk", "chunk_ms must be 1..1000")
        try:
            rec = wfdb.rdrecord(str(record), physical=False)
        except (OSError, ValueError) as exc:
            raise SourceError("record", f"cannot read {record}: {exc}") from exc
        names = list(rec.sig_name or [])
        if channel is None:
            channel = names[0] if names else ""
        if channel not in names:
            raise SourceError("channel", f"{channel!r} not in {names}")
        ch = names.index(channel)
        fs = float(rec.fs)
        if fs != int(fs):
            raise SourceError("rate", f"non-integer sampling frequency {fs}")
        self.sample_rate = int(fs)
        self.signal = signal or channel
        self.unit = rec.units[ch]
        self.adc_gain = float(rec.adc_gain[ch])
        self.baseline = int(rec.baseline[ch])
        digital = np.asarray(rec.d_signal[:, ch], dtype=np.int64) - self.baseline
        if digital.size == 0:
            raise SourceError("record", "record has no samples")
        if digital.min() < -32768 or digital.max() > 32767:
            raise SourceError("range", "samples minus baseline do not fit int16")
        self.samples = digital.astype(np.int16)
        self.scale = 1.0 / self.adc_gain
        self.chunk_ms = chunk_ms
        self.start_time = start_time
        self.first_seq = first_seq
        # fail early if the codec would refuse this signal, rate or unit
        Waveform(self.signal, self.sample_rate, 0, first_seq, self.scale, self.unit, (0,))
        self.patient_id = patient_id
        self.beats: hr.BeatTrack | None = None
        if patient_id is not None and self.signal in ECG_LEADS:
            Numerics(0, patient_id)  # fail early on an id the codec would refuse
            self.beats = (
                beats
                or hr.from_annotations(record, fs)
                or hr.from_ecg(self.samples * self.scale, fs)
            )
        self.hr_source = self.beats.source if self.beats is not None else None

    def __iter__(self) -> Iterator[tuple[float, Message]]:
        return self.iter_from(0)

    def iter_from(self, skip: int) -> Iterator[tuple[float, Message]]:
        """The replay without its first `skip` messages. The skipping is done here, eagerly
        (a caller can run it off the event loop); messages are built as they are taken."""
        if skip < 0:
            raise SourceError("skip", "skip must be >= 0")
        schedule = self._schedule()
        next(itertools.islice(schedule, skip, skip), None)  # consume `skip` items now
        return (self._message(item) for item in schedule)

    def position_at(self, t: float) -> int:
        """Messages due at or before time t (see SyntheticSource.position_at)."""
        rate, n = self.sample_rate, len(self.samples)
        count = 0
        for what, k in self._schedule():
            if what == "n":
                due = self.start_time + k
            else:
                due = self.start_time + min(chunk_bounds(k, rate, self.chunk_ms)[1], n) / rate
            if due > t:
                break
            count += 1
        return count

    def _schedule(self) -> Iterator[tuple[str, int]]:
        """("w", chunk index) and ("n", second) in due-time order; a numerics first on a tie,
        as in SyntheticSource. Cheap: messages are built only for what is not skipped."""
        rate, n = self.sample_rate, len(self.samples)
        second = 1
        for i in itertools.count():
            a, b = chunk_bounds(i, rate, self.chunk_ms)
            if a >= n:
                return
            b = min(b, n)
            while self.beats is not None and second * rate <= b:
                yield "n", second
                second += 1
            yield "w", i

    def _message(self, item: tuple[str, int]) -> tuple[float, Message]:
        what, k = item
        if what == "n":
            assert self.beats is not None and self.patient_id is not None
            t = self.start_time + k
            n = Numerics.from_values(_us(t), self.patient_id, {Param.HR: self.beats.hr_at(k)})
            return t, mark_suspect(n)
        rate = self.sample_rate
        a, b = chunk_bounds(k, rate, self.chunk_ms)
        b = min(b, len(self.samples))
        msg = Waveform(
            self.signal,
            rate,
            _us(self.start_time + a / rate),
            self.first_seq + a,
            self.scale,
            self.unit,
            tuple(int(s) for s in self.samples[a:b]),
        )
        return self.start_time + b / rate, msg


def beat_track(record: str | Path, channel: str | None = None) -> hr.BeatTrack | None:
    """The HR beat track WfdbReplay(record, channel=channel, patient_id=...) would build;
    picklable, so a process pool can compute it without holding this process's GIL."""
    return WfdbReplay(record, channel=channel, patient_id="beats").beats
