"""An HL7 ACK (AA) promises the reading is durable on the patient side: a patient node
SIGKILLed right after the ACK still delivers that reading to the clinician once it is
restarted with its --data-dir.

Real processes: the patient and clinician nodes, a signaling server on loopback, this test
as the monitor. While the message is handled, strace delays each of the patient's file
writes (pwrite64: SQLite's WAL and database) by 0.3 s, and the clinician is stopped
(SIGSTOP), so the reading cannot reach the clinician before the kill: it can only come from
the patient's store after the restart. A listener that ACKed before the store had the
reading (as it once did) loses it here every time. (The frame may also have reached the
clinician's socket before the kill; either way it is shown once.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]

from p2pmed.devices import hl7sim
from signaling.testing import RunningServer, running_server
from tests.node.conftest import NodeProc, start_proc


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def send(port: int, i: int, t: float) -> str:
    """One ORU^R01 whose OBX times are `t`; the ACK code."""
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    try:
        stats = hl7sim.Stats()
        text = hl7sim.oru_r01(f"K{i}", t, patient="PID-7", device="MON-1")
        await asyncio.wait_for(hl7sim.send_one(reader, writer, text, stats), 60)
        return next(iter(stats.acks))
    finally:
        writer.close()


async def slow_writes(pid: int) -> asyncio.subprocess.Process:
    """strace attached to `pid` (all threads), delaying each pwrite64 by 0.3 s."""
    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (Debian package strace)"
    proc = await asyncio.create_subprocess_exec(
        strace, "-f", "-p", str(pid), "-o", os.devnull, "-e", "trace=pwrite64",
        "-e", "inject=pwrite64:delay_enter=300000",
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"attached" in line, line
    return proc


async def test_reading_acked_then_patient_killed_is_delivered_after_restart(
    server: RunningServer, tmp_path: Path
) -> None:
    p_url = server.join_url(server.mint("k1", "patient"))
    source = ("--source", "hl7-mllp:127.0.0.1:0?idle=60", "--data-dir", str(tmp_path / "p"))
    patient: NodeProc | None = await start_proc(p_url, "patient-1", *source)
    clinician = await start_proc(server.join_url(server.mint("k1", "clinician")), "clinician")
    restarted: NodeProc | None = None
    strace = None
    base = float(int(time.time()))
    try:
        assert patient is not None
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        assert await send(port, 1, base) == "AA"
        await clinician.w.wait_for("message", kind="numerics", t_us=round(base * 1e6))

        strace = await slow_writes(patient.proc.pid)
        os.kill(clinician.proc.pid, signal.SIGSTOP)
        t = base + 1
        assert await send(port, 2, t) == "AA"
        patient.proc.kill()  # SIGKILL, right after the ACK
        await patient.proc.wait()
        await strace.wait()
        strace = None
        os.kill(clinician.proc.pid, signal.SIGCONT)
        patient = None

        restarted = await start_proc(p_url, "patient-2", *source)
        await restarted.w.wait_for("peer", state="restored")
        got = await clinician.w.wait_for("message", kind="numerics", t_us=round(t * 1e6))
        assert got["values"]["spo2"] is not None
        port = (await restarted.w.wait_for("device-listening"))["port"]
        assert await send(port, 3, t + 1) == "AA"  # what follows it, too, and it only once
        await clinician.w.wait_for("message", kind="numerics", t_us=round((t + 1) * 1e6))
        assert len(clinician.w.of("message", kind="numerics", t_us=round(t * 1e6))) == 1
        assert len(clinician.w.of("handshake")) == 1  # the same session, resumed
    finally:
        if strace is not None:
            strace.kill()
            await strace.wait()
        if clinician.proc.returncode is None:
            os.kill(clinician.proc.pid, signal.SIGCONT)
        await clinician.stop()
        for p in (patient, restarted):
            if p is not None:
                await p.stop()
