"""--source sdc: end to end: `p2pmed device-sim` (an sdc11073 provider process, stdin
/dev/null), a patient node process consuming it, a clinician node, a real signaling server on
loopback. Mapped numerics, waveforms at their real rates, carried and invalid metrics, the
device's identity and alerts reach the clinician; the provider killed is a technical alarm
within 5 s, and its return clears it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.testing import RunningServer, running_server
from tests.node.conftest import ROOT, start_inproc, start_proc


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def device_sim(log: Path, *args: str) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "device-sim", "--json", "--cycle", "6", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=log.open("ab"), cwd=str(ROOT), env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)  # printed once serving
    assert line, f"device-sim exited {await proc.wait()}; see {log}"
    return proc, json.loads(line)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_sdc_monitor_through_the_patient_node(server: RunningServer, tmp_path: Path) -> None:
    bed = f"bed-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "sim.log"
    sim, info = await device_sim(log, "--bed", bed, "--patient", "P-42", "--invalid-code", "150344")
    patient = await start_proc(
        server.join_url(server.mint("s1", "patient")),
        "patient",
        "--source", f"sdc:discover?bed={bed}", "--fhir-patient", "P-42",
    )  # fmt: skip
    clinician = await start_inproc(server.join_url(server.mint("s1", "clinician")), "clinician")
    w = clinician.w
    try:
        dev = await w.wait_for("message", kind="device", state="CONNECTED", timeout=90)
        assert dev["protocol"] == "sdc" and dev["device_id"] == info["epr"]
        assert dev["patient_reported"] is True
        n = await w.wait_for(
            lambda e: e["event"] == "message" and e.get("kind") == "numerics"
            and e["values"]["hr"] is not None and e["values"]["spo2"] is not None
        )  # fmt: skip
        assert 30 <= n["values"]["hr"] <= 250 and 50 <= n["values"]["spo2"] <= 100
        ecg = await w.wait_for("message", kind="waveform", signal="II")
        pleth = await w.wait_for("message", kind="waveform", signal="PLETH")
        assert ecg["n"] > 0 and pleth["n"] > 0
        pi = await w.wait_for("message", kind="metric", code=150488)  # carried, not mapped
        assert pi["valid"]
        temp = await w.wait_for("message", kind="metric", code=150344)  # Inv on the device
        assert temp["valid"] is False
        assert all(e["values"]["temp"] is None for e in w.of("message", kind="numerics"))
        alarm = await w.wait_for(
            lambda e: e["event"] == "alarm" and e["category"].startswith("DEVICE_"), timeout=90
        )
        assert alarm["condition"].startswith("dev-") and alarm["state"] == "ACTIVE"
        assert not w.of("alarm", condition="device-patient-mismatch")
        assert not w.of("waveform-gap")  # sample numbers run on: nothing lost on the way

        await stop(sim, signal.SIGKILL)  # unplugged
        lost = await w.wait_for("alarm", condition="device-disconnected")
        assert lost["priority"] == "HIGH" and lost["category"] == "TECHNICAL"
        await w.wait_for("message", kind="device", state="LOST")
        sim, _ = await device_sim(log, "--bed", bed, "--patient", "P-42", "--epr", info["epr"])
        back = await w.wait_for(
            lambda e: e["event"] == "alarm" and e["condition"] == "device-disconnected"
            and e["state"] != "ACTIVE", timeout=90
        )  # fmt: skip
        assert back["state"] in ("LATCHED", "CLEARED")
        assert patient.proc.returncode is None
    finally:
        await stop(sim)
        await clinician.stop()
        await patient.stop()
