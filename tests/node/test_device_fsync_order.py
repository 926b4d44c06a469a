"""An HL7 ACK (AA) is written only after the fsync that made the reading durable.

test_device_kill_after_ack.py shows that the ACK waits for the store's write (a SIGKILL
right after it loses nothing), but a process crash keeps what is in the OS's page cache: it
cannot tell a write from a durable one. This test looks at the syscalls themselves: a real
patient node process (HL7 listener, --data-dir), a clinician node process, a signaling
server on loopback, this test as the monitor, and strace on the patient. Between the read
of the message and the write of its ACK there must be an fsync/fdatasync of the store's
WAL (sessions.db-wal). A listener that ACKs as soon as it parsed the message (as it once
did) fails here: the commit's fsync comes after the ACK.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.testing import RunningServer, running_server
from tests.node.conftest import hl7_send, start_proc

_WAL_SYNC = re.compile(r"\bf(?:data)?sync\(\d+<[^>]*sessions\.db-wal>")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def trace(pid: int, out: Path) -> asyncio.subprocess.Process:
    """strace attached to `pid` (all threads): reads, writes and syncs, with fd paths."""
    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (Debian package strace)"
    proc = await asyncio.create_subprocess_exec(
        strace, "-f", "-y", "-s", "256", "-o", str(out), "-p", str(pid),
        "-e", "trace=read,recvfrom,write,sendto,sendmsg,fsync,fdatasync",
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"attached" in line, line
    return proc


async def test_ack_written_only_after_the_wal_fsync(server: RunningServer, tmp_path: Path) -> None:
    source = ("--source", "hl7-mllp:127.0.0.1:0?idle=60", "--data-dir", str(tmp_path / "p"))
    patient = await start_proc(server.join_url(server.mint("f1", "patient")), "patient", *source)
    clinician = await start_proc(server.join_url(server.mint("f1", "clinician")), "clinician")
    strace = None
    out = tmp_path / "strace.txt"
    base = float(int(time.time()))
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        assert await hl7_send(port, "WARM1", base) == "AA"
        strace = await trace(patient.proc.pid, out)
        for i in range(3):
            t = base + 1 + i
            control = f"FSYNC{i}"
            assert await hl7_send(port, control, t) == "AA"
            await clinician.w.wait_for("message", kind="numerics", t_us=round(t * 1e6))
        strace.terminate()  # detaches, and writes out what it has
        await strace.wait()
        strace = None
        lines = out.read_text(errors="replace").splitlines()
        for i in range(3):
            control = f"FSYNC{i}"
            got = next(n for n, ln in enumerate(lines) if f"|{control}|" in ln)
            acked = next(n for n, ln in enumerate(lines) if f"MSA|AA|{control}" in ln)
            assert got < acked
            syncs = [ln for ln in lines[got:acked] if _WAL_SYNC.search(ln)]
            assert syncs, f"no fsync of the WAL between {control}'s read and its ACK"
    finally:
        if strace is not None:
            strace.kill()
            await strace.wait()
        await clinician.stop()
        await patient.stop()
