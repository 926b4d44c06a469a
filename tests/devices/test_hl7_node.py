"""--source hl7-mllp: end to end: a patient node process listening for HL7 v2 over MLLP, an
`p2pmed hl7-sim` process as the monitor (stdin /dev/null), a clinician node, a real
signaling server on loopback. Mapped vitals, carried metrics, the device's identity and
its alert reach the clinician; bad input is answered or cut off, counted, and the node keeps
running; a device gone quiet is a technical alarm; a device reporting another patient is a
HIGH technical alarm and its vitals are withheld."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2pmed.ui import TerminalUI
from signaling.testing import RunningServer, running_server
from tests.node.conftest import ROOT, Watcher, start_inproc, start_proc

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def hl7_sim(port: int, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "hl7-sim", f"127.0.0.1:{port}", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(ROOT), env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip


async def sim_result(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    assert lines, err.decode()
    return lines[-1]


async def send_raw(port: int, data: bytes) -> bytes:
    """Write bytes to the listener; what came back until it closed or 5 s passed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            while FS + CR not in got:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
    return got


def msg(w: Watcher, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in w.of("message", kind=kind) if all(e.get(k) == v for k, v in match.items())]


async def test_monitor_vitals_and_alarms_reach_the_clinician(server: RunningServer) -> None:
    patient = await start_proc(
        server.join_url(server.mint("d1", "patient")),
        "patient",
        "--source", "hl7-mllp:127.0.0.1:0?idle=1.5", "--fhir-patient", "PID-7",
    )  # fmt: skip
    clinician = await start_inproc(server.join_url(server.mint("d1", "clinician")), "clinician")
    ui = TerminalUI(clinician.node.app)  # type: ignore[arg-type]
    sim = None
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        # bad input first: each answered with AR or cut off, counted; the node keeps serving
        ar = await send_raw(port, b"junk" + VT + b"PID|||1" + FS + CR)
        assert b"MSA|AR|" in ar and b"no-msh" in ar
        ar = await send_raw(port, VT + b"MSH|^~#&|A|B|||1||ORU^R01|C1|P|2.6" + FS + CR)
        assert b"MSA|AR|" in ar and b"encoding-chars" in ar
        big = VT + b"MSH|^~\\&|A|B|||1||ORU^R01|C1|P|2.6\rNTE|1||" + b"x" * (10 << 20) + FS + CR
        assert await send_raw(port, big) == b""  # closed, no ACK
        assert await send_raw(port, VT + b"MSH|^~\\&|A|B|||1||ORU^R01|C1|P") == b""  # truncated
        counts = await patient.w.wait_for(
            lambda e: e["event"] == "device-counts" and e["source"].get("oversized") == 1
        )
        assert counts["source"]["no-msh"] == 1 and counts["source"]["garbage"] == 1
        assert counts["source"]["encoding-chars"] == 1

        sim = await hl7_sim(port, "--rate", "5", "--duration", "4", "--alarm-every", "2")
        n = await clinician.w.wait_for(
            lambda e: e["event"] == "message" and e.get("kind") == "numerics"
            and e["values"]["hr"] is not None and e["values"]["temp"] is not None
        )  # fmt: skip
        assert 60 <= n["values"]["hr"] <= 80 and 95 <= n["values"]["spo2"] <= 99
        assert 110 <= n["values"]["sys"] <= 130 and 75 <= n["values"]["dia"] <= 85
        assert 36 <= n["values"]["temp"] <= 38 and 10 <= n["values"]["rr"] <= 18
        pr = await clinician.w.wait_for("message", kind="metric", code=149530)
        assert pr["unit"] == "/min" and pr["valid"] and pr["label"] == "MDC_PULS_OXIM_PULS_RATE"
        await clinician.w.wait_for("message", kind="metric", code=150303)  # NIBP mean
        dev = await clinician.w.wait_for("message", kind="device", state="CONNECTED")
        assert dev["protocol"] == "hl7" and dev["device_id"] == "MON-1"
        assert dev["patient_reported"] is True
        alarm = await clinician.w.wait_for("alarm", category="DEVICE_PHYSIOLOGICAL")
        assert alarm["priority"] == "MEDIUM" and alarm["state"] == "ACTIVE"
        assert alarm["condition"] == "dev-a1"
        screen = "\n".join(ui.render())
        assert "DEVICE hl7 MON-1 (sn 0012345678ABCDEF)  connected" in screen
        assert "MDC_PULS_OXIM_PULS_RATE" in screen and "DEVICE ALARM MEDIUM dev-a1" in screen
        result = await sim_result(sim)
        sim = None
        assert result["acks"] == {"AA": result["sent"]} and result["sent"] >= 10
        await clinician.w.wait_for("alarm", category="DEVICE_PHYSIOLOGICAL", state="CLEARED")
        # the monitor went quiet: a technical alarm within idle (1.5 s) of its last message
        lost = await clinician.w.wait_for("alarm", condition="device-disconnected")
        assert lost["category"] == "TECHNICAL" and lost["priority"] == "HIGH"
        await clinician.w.wait_for("message", kind="device", state="LOST")
        assert "DEVICE hl7 MON-1 (sn 0012345678ABCDEF)  LOST" in "\n".join(ui.render())
        assert patient.proc.returncode is None
    finally:
        if sim is not None:
            sim.kill()
            await sim.wait()
        await clinician.stop()
        await patient.stop()


async def test_device_of_another_patient_is_a_high_alarm_and_withheld(
    server: RunningServer,
) -> None:
    patient = await start_proc(
        server.join_url(server.mint("d2", "patient")),
        "patient",
        "--source", "hl7-mllp:127.0.0.1:0", "--fhir-patient", "PID-7",
    )  # fmt: skip
    clinician = await start_inproc(server.join_url(server.mint("d2", "clinician")), "clinician")
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        sim = await hl7_sim(port, "--count", "5", "--rate", "10", "--patient", "PID-99")
        alarm = await clinician.w.wait_for("alarm", condition="device-patient-mismatch")
        assert alarm["priority"] == "HIGH" and alarm["category"] == "TECHNICAL"
        result = await sim_result(sim)
        assert result["acks"] == {"AA": 5}  # accepted by the listener, withheld by the node
        counts = await patient.w.wait_for(
            lambda e: e["event"] == "device-counts"
            and e["mapping"].get("withheld-patient-mismatch", 0) >= 5 * 8
        )  # fmt: skip
        assert counts["mapping"]
        assert not msg(clinician.w, "numerics") and not msg(clinician.w, "metric")
    finally:
        await clinician.stop()
        await patient.stop()


async def test_a_port_in_use_stops_the_node_with_a_clear_error(server: RunningServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        patient = await start_proc(
            server.join_url(server.mint("d3", "patient")),
            "patient",
            "--source", f"hl7-mllp:127.0.0.1:{port}",
        )  # fmt: skip
        failed = await patient.w.wait_for("device-source-failed")
        assert f"cannot listen on 127.0.0.1:{port}" in failed["reason"]
        # the node stops rather than run on without its source, and exits non-zero (1) so
        # that systemd (Restart=on-failure) starts it again
        assert await asyncio.wait_for(patient.proc.wait(), 30) == 1
        await patient.stop()
