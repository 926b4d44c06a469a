"""The fault matrix in short mode: one test per scenario, each a real patient node and a real
clinician node in network namespaces, the signaling server in a third (bench/faults.py).

A row must meet the bar: nothing lost, duplicated, reordered or corrupted-but-delivered, and
no gap in the sample streams. Timings are printed in the row, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import fault_scenarios  # noqa: E402

KEYS = [s.key for s in fault_scenarios.SCENARIOS]


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_scenario_meets_the_bar(key: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faults.py"), "--short", "--json", "--only", key,
         "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,  # the runner bounds itself well below this
        cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stdout, f"no output; stderr:\n{proc.stderr[-4000:]}"
    rows = json.loads(proc.stdout)["rows"]
    assert len(rows) == 1
    row = rows[0]
    detail = json.dumps(row, indent=1) + "\n" + proc.stderr[-3000:]
    assert row["error"] is None, detail
    assert row["sent"] > 0 and row["delivered"] > 0, detail
    assert row["lost"] == 0, detail
    assert row["duplicated"] == 0, detail
    assert row["reordered"] == 0, detail
    assert row["corrupted"] == 0, detail
    assert row["sample_gaps"] == 0, detail
    assert row["passed"] and proc.returncode == 0, detail
