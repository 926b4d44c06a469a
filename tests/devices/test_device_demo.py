"""`p2pmed demo --source sdc`: the demo runs a simulated SDC monitor (device-sim) next to its
patient node; a clinician joining with the printed URL gets the monitor's vitals, waveforms
and identity; Ctrl-C stops all of it."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.node.conftest import ROOT, start_inproc


async def test_demo_with_an_sdc_monitor_streams_device_vitals(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "demo", "--source", "sdc", "--json", "--media", "none",
        "--data-dir", str(tmp_path),
        cwd=str(ROOT), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    url = ""
    async with asyncio.timeout(120):
        while not url:
            line = (await proc.stdout.readline()).decode()
            assert line, f"demo exited early: {(await proc.stderr.read()).decode()}"
            if line.startswith("http"):
                url = line.strip()
    drain = asyncio.ensure_future(proc.stdout.read())  # the patient's --json events
    clinician = await start_inproc(url, "clinician")
    try:
        dev = await clinician.w.wait_for("message", kind="device", state="CONNECTED")
        assert dev["protocol"] == "sdc" and dev["device_id"].startswith("urn:uuid:")
        n = await clinician.w.wait_for(
            lambda e: e["event"] == "message" and e.get("kind") == "numerics"
            and e["values"]["hr"] is not None and e["values"]["spo2"] is not None
        )  # fmt: skip
        assert 30 <= n["values"]["hr"] <= 200 and 70 <= n["values"]["spo2"] <= 100
        await clinician.w.wait_for("message", kind="waveform", signal="II")
        await clinician.w.wait_for("message", kind="waveform", signal="PLETH")
    finally:
        await clinician.stop()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
        await drain
    err = (await proc.stderr.read()).decode()
    assert proc.returncode == 0, err
    assert "SDC monitor urn:uuid:" in err and "demo-bed-" in err
    log = (tmp_path / "device-sim.log").read_text()
    assert "Traceback" not in log, log
