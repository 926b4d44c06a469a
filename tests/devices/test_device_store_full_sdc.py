"""An SDC monitor streams while the patient gateway's disk is full (tests/node/
test_store_full.py has the synthetic and HL7 sources). The device does not wait, as an HL7
sender does for its ACK: its reports go on arriving. Nothing not durable may leave the node,
so the readings wait in the source's bounded queue (SdcSource, 10,000 readings: minutes of
a monitor's reports) and, once space is back, are stored and sent in order: the clinician
has every sample, no gap, no duplicate, and the device stays connected throughout.

Real parts: `p2pmed device-sim` (an sdc11073 provider process), the patient node process
consuming it with --data-dir on a tmpfs this test mounts and fills, a clinician node, a
signaling server on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.testing import RunningServer
from tests.devices.test_device_sdc_node import device_sim, server, stop
from tests.node.conftest import check_stream, start_proc
from tests.smalldisk import SmallDisk, small_disk

__all__ = ["server"]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


async def test_sdc_readings_wait_for_the_disk_and_all_arrive(
    server: RunningServer, disk: SmallDisk, tmp_path: Path
) -> None:
    bed = f"bed-{uuid.uuid4().hex[:8]}"
    sim, info = await device_sim(tmp_path / "sim.log", "--bed", bed, "--patient", "P-42")
    patient = await start_proc(
        server.join_url(server.mint("s1", "patient")),
        "patient",
        "--source", f"sdc:{info['epr']}", "--fhir-patient", "P-42",
        "--data-dir", str(disk.mount / "p"),
    )  # fmt: skip
    clinician = await start_proc(server.join_url(server.mint("s1", "clinician")), "clinician")
    w = clinician.w
    try:
        await w.wait_for("message", kind="device", state="CONNECTED", timeout=90)
        await w.wait_for("message", kind="waveform", signal="II")
        disk.fill()
        await patient.w.wait_for("store-failed")
        await w.wait_for("technical-alarm", code="all-paths-down")
        before = len(w.of("message", kind="waveform"))
        await asyncio.sleep(3)  # the device reports on; nothing reaches the clinician
        assert len(w.of("message", kind="waveform")) == before

        disk.free()
        await patient.w.wait_for("store-recovered")
        n_sent = len(patient.w.of("sent"))
        await w.wait_count("message", n_sent + 40)
        assert not w.of("waveform-gap")
        assert not w.of("alarm", condition="device-disconnected")
        assert not patient.w.of("device-source-failed") and not patient.w.of("error")
    finally:
        await stop(sim)
        await clinician.stop()
        assert await patient.stop() == 0
    check_stream(patient.w.of("sent"), clinician.w.of("message"))
    assert b"Traceback" not in patient.stderr, patient.stderr.decode()[-3000:]
