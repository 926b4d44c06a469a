"""Write tests/data/mitdb208.ref: reference beat annotations for the 60 s mitdb208 excerpt.

No cardiologist annotation (.atr) ships with scipy's excerpt, so this reference was made by
hand with the help of two detectors: every beat where wfdb's XQRS and GQRS agree (within
0.1 s, positions moved to the R peak with wfdb.processing.correct_peaks), checked by eye on
plots of all 60 s, plus the decisions below, taken by eye where the two disagreed. All beats
are labelled "Q" (unclassified): the reference gives beat times, not beat types. Between
42.4 s and 44.1 s a baseline artifact hides the ECG: beats there are unknown and none are
annotated. Run from the repository root: .venv/bin/python tests/data/make_mitdb208_ref.py
"""

from pathlib import Path

import numpy as np
import wfdb  # type: ignore[import-untyped]
from wfdb import processing

HERE = Path(__file__).resolve().parent
ADDED_S = (44.103, 49.142, 58.806, 59.978)  # low beat after the artifact, a PVC, two sinus beats
REJECTED_S = (19.875, 55.147, 58.653)  # narrow spikes off the sinus rhythm: artifacts


def main() -> None:
    rec = wfdb.rdrecord(str(HERE / "mitdb208"))
    sig, fs = rec.p_signal[:, 0], int(rec.fs)

    def peaks(p: np.ndarray) -> np.ndarray:
        return np.asarray(
            processing.correct_peaks(
                sig,
                p,
                search_radius=int(0.08 * fs),
                smooth_window_size=int(0.1 * fs),
                peak_dir="compare",
            )
        )

    xqrs = processing.XQRS(sig, fs)
    xqrs.detect(verbose=False)
    x, g = peaks(np.asarray(xqrs.qrs_inds)), peaks(np.asarray(processing.gqrs_detect(sig, fs=fs)))
    agreed = [int(q) for q in x if np.min(np.abs(g - q)) <= 0.1 * fs]
    for r in REJECTED_S:
        assert all(abs(q / fs - r) > 0.05 for q in agreed), r
    beats = np.array(sorted(agreed + [round(s * fs) for s in ADDED_S]), dtype=np.int64)
    wfdb.wrann("mitdb208", "ref", beats, symbol=["Q"] * len(beats), fs=fs, write_dir=str(HERE))
    print(f"{len(beats)} beats -> {HERE / 'mitdb208.ref'}")


if __name__ == "__main__":
    main()
