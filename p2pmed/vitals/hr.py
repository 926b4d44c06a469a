"""Heart rate from an ECG record, for sources that carry only the waveform (WFDB replay).

Beat times come from the record's reference beat annotations (`<record>.atr`) when it has
them, otherwise from wfdb.processing's XQRS detector, keeping only the beats a second,
independent detector (GQRS) finds too. The agreement between the two detectors over the
window (bSQI, Li, Clifford et al., Physiol Meas 2008) falls on noise, where both "find"
beats but not the same ones; but on white noise both can pick the same largest spikes, so
the ECG must also look like one: the kurtosis of its QRS band (5-20 Hz) is 8-14 on record
208 and 3 on Gaussian noise (kSQI, same paper). A reading is the mean rate over the last
WINDOW_S seconds, 60 x intervals / their total time, where an RR interval of about n times the
median RR counts as n intervals: a beat the detector missed (XQRS misses some PVCs) does
not lower it, while a premature beat and its compensatory pause keep their true mean; with
too few beats, beats that stopped, detectors that disagree (bSQI below MIN_AGREEMENT) or a signal
that is not peaky enough (kSQI below MIN_KURTOSIS) there is no reading: None, never a guess.

Detection runs once over the whole record when the track is built (about 0.3 s per minute
of 360 Hz ECG): build it off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANNOTATIONS = "annotations"
DETECTOR = "ecg-detector"

WINDOW_S = 10.0
MIN_RR_S, MAX_RR_S = 0.2, 3.0  # 300 .. 20 /min: anything else is not an RR interval
MIN_RR_COUNT = 2
MATCH_S = 0.15  # two detectors' marks of one beat lie within this of each other
MIN_AGREEMENT = 0.8  # bSQI below this: the ECG is too noisy to count beats
MIN_KURTOSIS = 5.0  # kSQI below this: no QRS complexes stand out of the noise
QRS_BAND_HZ = (5.0, 20.0)


@dataclass(frozen=True)
class BeatTrack:
    source: str  # ANNOTATIONS | DETECTOR
    fs: float
    beats: np.ndarray  # beat sample indices, sorted
    # DETECTOR only: each detector's own beats (XQRS, GQRS); `beats` = XQRS beats GQRS confirms
    detected: tuple[np.ndarray, np.ndarray] | None = None
    # DETECTOR only: cumulative [count, sum x, x^2, x^3, x^4] of the QRS-band signal per second
    moments: np.ndarray | None = None

    def hr_at(self, t: float) -> float | None:
        """Heart rate (/min) at t seconds into the record, or None when it can't be told."""
        hi = int(np.searchsorted(self.beats, t * self.fs, side="right"))
        lo = int(np.searchsorted(self.beats, (t - WINDOW_S) * self.fs, side="right"))
        times = self.beats[lo:hi] / self.fs
        if len(times) < MIN_RR_COUNT + 1:
            return None
        rr = np.diff(times)
        rr = rr[(rr >= MIN_RR_S) & (rr <= MAX_RR_S)]
        if len(rr) < MIN_RR_COUNT:
            return None
        median = float(np.median(rr))
        if t - times[-1] > max(2.0 * median, 1.5):  # the beats stopped (flat line, leads off)
            return None
        if self.detected is not None and self.agreement(t) < MIN_AGREEMENT:
            return None
        if self.moments is not None and self.kurtosis(t) < MIN_KURTOSIS:
            return None
        beats = np.maximum(1.0, np.rint(rr / median))  # ~n x the median RR: n - 1 beats missed
        return float(60.0 * beats.sum() / rr.sum())

    def kurtosis(self, t: float) -> float:
        """kSQI: kurtosis of the QRS-band signal over the window ending at t (whole seconds)."""
        assert self.moments is not None
        last = len(self.moments) - 1
        hi = min(last, max(0, int(t)))
        lo = min(hi, max(0, int(t - WINDOW_S)))
        n, s1, s2, s3, s4 = self.moments[hi] - self.moments[lo]
        if n < 2:
            return 0.0
        m = s1 / n
        var = s2 / n - m * m
        if var <= 0:
            return 0.0
        m4 = s4 / n - 4 * m * s3 / n + 6 * m * m * s2 / n - 3 * m**4
        return float(m4 / (var * var))

    def agreement(self, t: float) -> float:
        """bSQI over the window ending at t: 2 * matched / (beats of one + beats of other)."""
        assert self.detected is not None
        a, b = (t - WINDOW_S) * self.fs, t * self.fs
        x, g = ((d[(d > a) & (d <= b)]) for d in self.detected)
        if len(x) == 0 or len(g) == 0:
            return 0.0
        matched = int(np.count_nonzero(_matched(x, g, MATCH_S * self.fs)))
        return 2.0 * min(matched, len(g)) / (len(x) + len(g))


def _matched(x: np.ndarray, g: np.ndarray, tolerance: float) -> np.ndarray:
    """Which of the sorted beats x have one of the sorted beats g within `tolerance`."""
    if len(g) == 0:
        return np.zeros(len(x), dtype=bool)
    idx = np.searchsorted(g, x)
    left = g[np.clip(idx - 1, 0, len(g) - 1)]
    right = g[np.clip(idx, 0, len(g) - 1)]
    return np.asarray(np.minimum(np.abs(x - left), np.abs(x - right)) <= tolerance)


def from_annotations(record: str | Path, fs: float) -> BeatTrack | None:
    """The record's reference beats (`<record>.atr`, beat labels only), or None without one."""
    import wfdb  # type: ignore[import-untyped]
    from wfdb.io.annotation import is_qrs  # type: ignore[import-untyped]

    if not Path(f"{record}.atr").exists():
        return None
    ann = wfdb.rdann(str(record), "atr")
    stores = np.asarray(ann.label_store if ann.label_store is not None else [], dtype=np.int64)
    if len(stores) != len(ann.sample):  # labels given as symbols only
        from wfdb.io.annotation import ann_label_table

        to_store = dict(zip(ann_label_table.symbol, ann_label_table.label_store, strict=True))
        stores = np.asarray([to_store.get(s, 0) for s in ann.symbol], dtype=np.int64)
    qrs = np.asarray(is_qrs, dtype=bool)
    keep = np.array([0 <= s < len(qrs) and bool(qrs[s]) for s in stores], dtype=bool)
    beats = np.sort(np.asarray(ann.sample, dtype=np.int64)[keep])
    return BeatTrack(ANNOTATIONS, fs, beats)


def from_ecg(signal_mv: np.ndarray, fs: float) -> BeatTrack:
    """Beats detected in one ECG lead (physical units), checked by a second detector."""
    from wfdb import processing

    sig = np.nan_to_num(np.asarray(signal_mv, dtype=np.float64))
    if len(sig) < 2 * fs or float(np.ptp(sig)) == 0.0:  # too short, or a flat line: no beats
        empty = np.zeros(0, dtype=np.int64)
        return BeatTrack(DETECTOR, fs, empty, (empty, empty))
    xqrs = processing.XQRS(sig, fs)
    xqrs.detect(verbose=False)
    x = np.sort(np.asarray(xqrs.qrs_inds, dtype=np.int64))
    g = np.sort(np.asarray(processing.gqrs_detect(sig, fs=fs), dtype=np.int64))
    return BeatTrack(DETECTOR, fs, x[_matched(x, g, MATCH_S * fs)], (x, g), _moments(sig, fs))


def _moments(sig: np.ndarray, fs: float) -> np.ndarray:
    """Cumulative per-second power sums of the QRS band, for kurtosis over any window."""
    from scipy.signal import butter, sosfiltfilt  # type: ignore[import-untyped]

    band = sosfiltfilt(butter(2, QRS_BAND_HZ, btype="band", fs=fs, output="sos"), sig)
    per = int(fs)
    blocks = np.zeros((-(-len(band) // per) + 1, 5))
    for i in range(1, len(blocks)):
        x = band[(i - 1) * per : i * per]
        blocks[i] = (len(x), x.sum(), (x**2).sum(), (x**3).sum(), (x**4).sum())
    return np.cumsum(blocks, axis=0)
