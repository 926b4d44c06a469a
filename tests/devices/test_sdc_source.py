"""SdcSource against real device_sim processes (sdc11073 provider) on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from p2pmed.devices.device_sim import Script
from p2pmed.devices.reading import DeviceAlert, DeviceInfo, DeviceLost, Metric, Priority, Samples
from p2pmed.devices.sdc import SdcSource

MAPPED_CODES = {147842, 150456, 149530, 150301, 150302, 150303, 150344, 151562}
UNMAPPED_CODE = 150488  # perfusion index: published by the device, mapped by nobody
ECG, PLETH = 131330, 150452


class Sim:
    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, str]) -> None:
        self.proc = proc
        self.epr = info["epr"]
        self.address = info["address"]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_sim(log_dir: Path, *args: str) -> Sim:
    log = (log_dir / f"sim-{uuid.uuid4().hex[:6]}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pmed.devices.device_sim", "--json", "--cycle", "6", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the sim prints it once serving, or exits
    if not line:
        proc.wait()
        raise AssertionError(f"device_sim exited {proc.returncode}; see {log.name}")
    return Sim(proc, json.loads(line))


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[list[Sim]]:
    started: list[Sim] = []
    yield started
    for sim in started:
        sim.terminate()
    for sim in started:
        sim.stop()


@pytest.fixture
async def sources() -> AsyncIterator[list[SdcSource]]:
    made: list[SdcSource] = []
    yield made
    for source in made:
        await source.aclose()


def unique_bed() -> str:
    return f"bed-{uuid.uuid4().hex[:8]}"


async def test_reads_identity_metrics_waveforms_alerts(
    tmp_path: Path, sims: list[Sim], sources: list[SdcSource]
) -> None:
    sim = start_sim(
        tmp_path, "--bed", unique_bed(), "--patient", "P-42", "--invalid-code", "150344"
    )
    sims.append(sim)
    source = SdcSource(sim.epr)
    sources.append(source)

    readings = source.readings()
    first = await asyncio.wait_for(anext(readings), 30)
    assert isinstance(first, DeviceInfo)
    assert first.protocol == "sdc"
    assert first.device_id == sim.epr
    assert first.patient_id == "P-42"
    assert first.model and first.serial and first.manufacturer == "p2pmed"

    metrics: dict[int, list[Metric]] = {}
    samples: dict[int, list[Samples]] = {ECG: [], PLETH: []}
    alerts: dict[str, list[DeviceAlert]] = {}

    def waveform_span_s(code: int) -> float:
        runs = samples[code]
        return 0.0 if len(runs) < 2 else (runs[-1].time_us - runs[0].time_us) / 1e6  # type: ignore[operator]

    def done() -> bool:
        raised = {k for k, v in alerts.items() if any(a.active for a in v)}
        return (
            MAPPED_CODES | {UNMAPPED_CODE} <= metrics.keys()
            and {"ac.spo2.low", "ac.hr.high", "ac.ecg.leadoff"} <= raised
            and min(waveform_span_s(ECG), waveform_span_s(PLETH)) >= 10.0
        )

    async with asyncio.timeout(90):
        async for r in readings:
            assert not isinstance(r, DeviceLost | DeviceInfo), r
            if isinstance(r, Metric):
                metrics.setdefault(r.code, []).append(r)
            elif isinstance(r, Samples):
                samples[r.code].append(r)
            elif isinstance(r, DeviceAlert):
                alerts.setdefault(r.key, []).append(r)
            if done():
                break

    for code in MAPPED_CODES | {UNMAPPED_CODE}:
        expect_valid = code != 150344
        assert all(m.valid == expect_valid for m in metrics[code]), (code, metrics[code][:3])
    assert metrics[147842][0].unit == "MDC_DIM_BEAT_PER_MIN"
    assert metrics[150456][0].label == "MDC_PULS_OXIM_SAT_O2"

    for code, rate in ((ECG, 500.0), (PLETH, 125.0)):
        runs = samples[code]
        assert {r.rate_hz for r in runs} == {rate}
        for prev, nxt in itertools.pairwise(runs):
            expected = prev.time_us + len(prev.values) * 1e6 / rate  # type: ignore[operator]
            # BICEPS timestamps are whole milliseconds; one missing ECG sample is 2 ms
            assert abs(nxt.time_us - expected) <= 1000, (code, prev.time_us, nxt.time_us)  # type: ignore[operator]
        total = sum(len(r.values) for r in runs)
        span = (runs[-1].time_us - runs[0].time_us) / 1e6 * rate + len(runs[-1].values)  # type: ignore[operator]
        assert abs(total - span) <= 1, (code, total, span)
    assert any(not r.valid for r in samples[ECG]), "lead-off samples are flagged invalid"

    spo2_low = next(a for a in alerts["ac.spo2.low"] if a.active)
    assert spo2_low.priority is Priority.HIGH and not spo2_low.technical
    assert spo2_low.code == 196670
    hr_high = next(a for a in alerts["ac.hr.high"] if a.active)
    assert hr_high.priority is Priority.MEDIUM
    lead_off = next(a for a in alerts["ac.ecg.leadoff"] if a.active)
    assert lead_off.technical and lead_off.priority is Priority.LOW and lead_off.code is None

    await source.aclose()
    assert source.stats.overflows == 0 and source.stats.report_errors == 0


async def test_provider_killed_then_back(
    tmp_path: Path, sims: list[Sim], sources: list[SdcSource]
) -> None:
    epr = uuid.uuid4().urn
    bed = unique_bed()
    sim = start_sim(tmp_path, "--bed", bed, "--patient", "P-1", "--epr", epr)
    sims.append(sim)
    source = SdcSource(epr)
    sources.append(source)
    readings = source.readings()

    async with asyncio.timeout(60):
        first = await anext(readings)
        assert isinstance(first, DeviceInfo) and first.device_id == epr
        async for r in readings:
            if isinstance(r, Samples):
                break

        sim.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(sim.proc.wait)
        killed = time.monotonic()
        async for r in readings:
            if isinstance(r, DeviceLost):
                lost_after = time.monotonic() - killed
                break
        assert lost_after < 5.0, f"DeviceLost {lost_after:.2f} s after the kill"  # issue #13's bar
        assert "no report" in r.reason

        restarted = await asyncio.to_thread(
            start_sim, tmp_path, "--bed", bed, "--patient", "P-1", "--epr", epr
        )
        sims.append(restarted)
        again = await anext(readings)
        assert isinstance(again, DeviceInfo), again
        assert again.device_id == epr and again.patient_id == "P-1"
        async for r in readings:
            assert not isinstance(r, DeviceLost), r
            if isinstance(r, Samples):
                break

        # SIGTERM: the provider ends its subscriptions, no need to wait for silence
        stopping = asyncio.create_task(asyncio.to_thread(sims[-1].stop))
        async for r in readings:
            if isinstance(r, DeviceLost):
                break
        assert "subscription" in r.reason, r
        await stopping
    assert source.stats.sessions == 2 and source.stats.lost == 2


async def test_discover_filters_by_bed(
    tmp_path: Path, sims: list[Sim], sources: list[SdcSource]
) -> None:
    bed_a, bed_b = unique_bed(), unique_bed()
    sim_a = start_sim(tmp_path, "--bed", bed_a, "--patient", "P-A")
    sim_b = start_sim(tmp_path, "--bed", bed_b, "--patient", "P-B")
    sims.extend([sim_a, sim_b])

    by_kwarg = SdcSource("discover", bed=bed_b)
    by_query = SdcSource(f"discover?bed={bed_a}")
    sources.extend([by_kwarg, by_query])
    async with asyncio.timeout(60):
        info_b = await anext(by_kwarg.readings())
        info_a = await anext(by_query.readings())
    assert isinstance(info_b, DeviceInfo) and isinstance(info_a, DeviceInfo)
    assert (info_b.device_id, info_b.patient_id) == (sim_b.epr, "P-B")
    assert (info_a.device_id, info_a.patient_id) == (sim_a.epr, "P-A")


async def test_a_new_patient_context_yields_a_new_device_info(
    tmp_path: Path, sims: list[Sim], sources: list[SdcSource]
) -> None:
    sim = start_sim(
        tmp_path, "--bed", unique_bed(), "--patient", "P-OLD", "--switch-patient", "P-NEW@2"
    )
    sims.append(sim)
    source = SdcSource(sim.epr)
    sources.append(source)
    readings = source.readings()
    async with asyncio.timeout(60):
        first = await anext(readings)
        assert isinstance(first, DeviceInfo) and first.patient_id == "P-OLD"
        async for r in readings:
            assert not isinstance(r, DeviceLost), r
            if isinstance(r, DeviceInfo):
                break
    assert r.patient_id == "P-NEW" and r.device_id == sim.epr
    assert source.stats.sessions == 1


def test_bad_target_is_refused() -> None:
    with pytest.raises(ValueError, match="discover"):
        SdcSource("")


async def test_queue_overflow_is_reported_then_resubscribes(
    tmp_path: Path, sims: list[Sim], sources: list[SdcSource]
) -> None:
    sim = start_sim(tmp_path, "--bed", unique_bed(), "--patient", "P-9")
    sims.append(sim)
    source = SdcSource(sim.epr, queue_size=8)
    sources.append(source)
    readings = source.readings()
    async with asyncio.timeout(60):
        assert isinstance(await anext(readings), DeviceInfo)
        await asyncio.sleep(1.0)  # a stalled reader: ~40 waveform reports/s fill 8 slots
        async for r in readings:
            if isinstance(r, DeviceLost):
                break
        assert r.reason.startswith("overflow"), r
        assert source.stats.overflows > 0
        again = await anext(readings)
        assert isinstance(again, DeviceInfo) and again.device_id == sim.epr


def test_sim_script_is_deterministic_by_seed() -> None:
    def run(seed: int) -> list[dict[int, float]]:
        script = Script(seed, 60.0)
        return [script.numerics(t) for t in range(0, 120, 3)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    script = Script(7, 60.0)
    assert script.numerics(25.0)[150456] < 90 < script.numerics(5.0)[150456]  # desaturation
    assert script.numerics(45.0)[147842] > 120 > script.numerics(5.0)[147842]  # tachycardia
