"""The order of a device reading's way out of the patient node: its frame leaves for the
clinician while the store's fsync of it is still running, and the HL7 ACK is written only
once that fsync is done (the reading durable).

A real patient node (in this process, with its SQLite store and HL7 listener), a clinician
node process, a signaling server on loopback, this test as the monitor. The test holds the
store's durability step (`WalSync.request`, which runs the WAL's fdatasync after the
transports' sends) until it lets it go; the fdatasync itself is the real one. While it is
held, the clinician shows the reading and the monitor has no ACK; once let go, the fsync
runs and then the ACK comes. Before, the frame waited for the fsync, and the ACK did not
wait for anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]

from p2pmed.devices import hl7sim
from p2pmed.node.persist import WalSync
from p2pmed.store.sqlite import SessionStore
from signaling.testing import RunningServer, running_server
from tests.node.conftest import start_inproc, start_proc


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "server") as srv:
        yield srv


async def test_frame_leaves_before_the_fsync_and_the_ack_after_it(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold = asyncio.Event()
    hold.set()
    tasks: set[asyncio.Future[None]] = set()
    synced = 0
    real_sync, real_request = SessionStore.sync_wal, WalSync.request

    def counted_sync(self: SessionStore) -> None:
        nonlocal synced
        real_sync(self)
        synced += 1

    def held_request(self: WalSync) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await hold.wait()
            try:
                await real_request(self)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        tasks.add(asyncio.ensure_future(later()))
        return done

    monkeypatch.setattr(SessionStore, "sync_wal", counted_sync)
    monkeypatch.setattr(WalSync, "request", held_request)
    patient = await start_inproc(
        server.join_url(server.mint("o1", "patient")),
        "patient",
        source="hl7-mllp:127.0.0.1:0?idle=60",
        data_dir=str(tmp_path / "p"),
    )
    clinician = await start_proc(server.join_url(server.mint("o1", "clinician")), "clinician")
    try:
        port = (await patient.w.wait_for("device-listening"))["port"]
        await clinician.w.wait_for("patient-status")
        reader, writer = await open_hl7_connection("127.0.0.1", port)
        stats = hl7sim.Stats()
        base = float(int(time.time()))
        for i in range(3):
            t = base + i
            text = hl7sim.oru_r01(f"O{i}", t, patient="PID-7", device="MON-1")
            hold.clear()
            before = synced
            ack = asyncio.create_task(hl7sim.send_one(reader, writer, text, stats))
            await clinician.w.wait_for("message", kind="numerics", t_us=round(t * 1e6))
            assert not ack.done()  # shown at the clinician; the monitor still waits
            assert synced == before
            hold.set()
            await asyncio.wait_for(ack, 60)
            assert synced > before  # the ACK came after the fsync
        assert stats.acks == {"AA": 3}
        writer.close()
    finally:
        hold.set()
        await clinician.stop()
        await patient.stop()
