"""The patient's disk fills up mid-consultation (logs, a core dump): its store cannot be
written. Nothing may leave that is not durable, so the vitals stop; the node must say why,
the clinician must get a technical alarm, and once space is freed everything queued
meanwhile must arrive, once and in order, and the stream go on. Before, the first refused
commit killed the vitals source for good: the clinician's alarm cleared when space came back
and the vitals stayed frozen, with no alarm (and the node named a ROLLBACK error instead).

Real processes (patient and clinician nodes, a signaling server on loopback) and a real full
file system: the patient's --data-dir is on a tmpfs this test mounts (root, as CI runs) and
fills with a file.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.testing import RunningServer
from tests.node.conftest import NodeProc, check_stream, hl7_send, start_proc
from tests.smalldisk import SmallDisk, small_disk


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


def store_events(node: NodeProc) -> list[str]:
    return [e["event"] for e in node.w.events if e["event"].startswith("store-")]


async def test_synthetic_vitals_stop_alarm_and_all_arrive_once_space_is_back(
    server: RunningServer, disk: SmallDisk
) -> None:
    data = ("--data-dir", str(disk.mount / "p"))
    patient = await start_proc(server.join_url(server.mint("f1", "patient")), "patient", *data)
    clinician = await start_proc(server.join_url(server.mint("f1", "clinician")), "clinician")
    try:
        await clinician.w.wait_for("message", kind="numerics")
        disk.fill()
        failed = await patient.w.wait_for("store-failed")
        assert "database or disk is full" in failed["message"]
        assert failed["path"].startswith(str(disk.mount))
        # no frame leaves the patient: the clinician's paths go quiet and it is told
        alarm = await clinician.w.wait_for("technical-alarm", code="all-paths-down")
        i_alarm = clinician.w.events.index(alarm)
        await patient.w.wait_count("sent", len(patient.w.of("sent")) + 20)  # still queueing

        disk.free()
        recovered = await patient.w.wait_for("store-recovered")
        assert recovered["attempts"] >= 1 and recovered["failed_s"] > 0
        await clinician.w.wait_for("technical-alarm-cleared", code="all-paths-down", after=i_alarm)
        # what was queued while the disk was full, and what came after, all arrives
        n_sent = len(patient.w.of("sent"))
        await clinician.w.wait_count("message", n_sent + 20)
        assert store_events(patient) == ["store-failed", "store-recovered"]
        assert not patient.w.of("error") and not clinician.w.of("error")
        # the source was never stopped: a NUMERICS for every second of the stream's time
        ts = [e["t_us"] for e in clinician.w.of("message", kind="numerics")]
        assert all(0 < b - a <= 1_500_000 for a, b in itertools.pairwise(ts)), ts
    finally:
        await clinician.stop()
        assert await patient.stop() == 0
    check_stream(patient.w.of("sent"), clinician.w.of("message"))
    assert b"Traceback" not in patient.stderr, patient.stderr.decode()[-3000:]
    assert b"cannot rollback" not in patient.stderr


async def test_hl7_message_is_acked_only_once_it_is_stored(
    server: RunningServer, disk: SmallDisk
) -> None:
    """A monitor's message that arrives while the disk is full gets no ACK (its AA would
    promise a reading the gateway could lose); when space is back it is stored, ACKed AA,
    shown to the clinician once, and the device goes on."""
    source = ("--source", "hl7-mllp:127.0.0.1:0?idle=120")
    data = ("--data-dir", str(disk.mount / "p"))
    patient = await start_proc(
        server.join_url(server.mint("f2", "patient")), "patient", *source, *data
    )
    clinician = await start_proc(server.join_url(server.mint("f2", "clinician")), "clinician")
    base = float(int(asyncio.get_running_loop().time()) + 1_800_000_000)
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        assert await hl7_send(port, "F1", base) == "AA"
        await clinician.w.wait_for("message", kind="numerics", t_us=round(base * 1e6))

        disk.fill()
        pending = asyncio.ensure_future(hl7_send(port, "F2", base + 1, timeout=120))
        await patient.w.wait_for("store-failed")
        await clinician.w.wait_for("technical-alarm", code="all-paths-down")
        # the listener answers only what is stored: while the disk stays full, no ACK
        for _ in range(50):
            await asyncio.sleep(0.05)
            assert not pending.done(), pending.result()

        disk.free()
        assert await pending == "AA"
        await patient.w.wait_for("store-recovered")
        await clinician.w.wait_for("message", kind="numerics", t_us=round((base + 1) * 1e6))
        assert await hl7_send(port, "F3", base + 2) == "AA"
        await clinician.w.wait_for("message", kind="numerics", t_us=round((base + 2) * 1e6))
        for t in (base, base + 1, base + 2):
            assert len(clinician.w.of("message", kind="numerics", t_us=round(t * 1e6))) == 1
        assert store_events(patient) == ["store-failed", "store-recovered"]
        assert not patient.w.of("device-source-failed") and not patient.w.of("error")
    finally:
        await clinician.stop()
        assert await patient.stop() == 0
    assert b"Traceback" not in patient.stderr, patient.stderr.decode()[-3000:]
