"""The fuzz script runs clean on a small count (the full 1M run is bench/fuzz.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_small_count_finds_no_crash() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/fuzz.py", "--count", "3000", "--seed", "7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3,000 inputs" in proc.stdout
    assert "crashes=0" in proc.stdout
    # the mutations reach every layer of the receive pipeline
    for key in (
        "rejected_frame_crc",
        "rejected_crypto_auth",
        "rejected_crypto_replay",
        "rejected_state",
    ):
        assert key in proc.stdout
