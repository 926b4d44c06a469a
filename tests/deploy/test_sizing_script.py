"""scripts/measure-sizing.py (the sizing figures in docs/operations.md) runs and reports
every figure."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.deploy.manual import ROOT


async def test_sizing_script_reports_figures() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "measure-sizing.py"),
        "--endpoints", "20", "--seconds", "2",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(ROOT),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    figures = json.loads(out)
    assert figures["endpoints"] == 20
    for key in (
        "server_rss_mib_with_1_endpoint",
        "server_kib_per_idle_endpoint",
        "patient_rss_mib",
        "clinician_rss_mib",
    ):
        assert figures[key] > 0, key
    assert figures["patient_cpu_pct_one_core"] > 0  # it was streaming
