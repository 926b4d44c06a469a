"""The SDC device protocol's own latency and sample loss: device_sim process -> SdcSource.

    .venv/bin/python bench/sdc_bench.py                  # 60 s, prints figures, exit 1 on a miss
    .venv/bin/python bench/sdc_bench.py --seconds 600    # issue #13's 10-minute run

One simulated monitor (p2pmed.devices.device_sim, a separate process on loopback) streams ECG
II at 500 Hz and pleth at 125 Hz (one report per signal every 50 ms) and numerics every second.
SdcSource consumes it; its `tap` hook stamps each reading on sdc11073's callback thread.

- numeric latency: provider set (the metric's DeterminationTime, stamped just before the
  provider's transaction) -> consumer callback. BICEPS timestamps are whole milliseconds
  (sdc11073 truncates), so each figure carries +0..1 ms.
- waveform latency: time of a report's last sample -> consumer callback (includes up to one
  50 ms chunk of batching in the provider, which is the device's design, not the protocol).
- bridge hop: consumer callback -> the reading leaving `SdcSource.readings()` (p2pmed's part).
- samples lost: per signal, the gap between each report's first sample time and the end of the
  previous report (1 ms tolerance for the millisecond timestamps), plus the samples of any
  DeviceLost. Bar: 0 samples lost, no DeviceLost, no queue overflow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from p2pmed.devices.reading import DeviceLost, Metric, Reading, Samples
from p2pmed.devices.sdc import SdcSource

ECG, PLETH = 131330, 150452


def bed_cycle(epr: str) -> list[str]:
    return ["--bed", f"bench-{epr[-8:]}", "--cycle", "60"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def start_sim(epr: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pmed.devices.device_sim",
            "--json",
            "--epr",
            epr,
            *bed_cycle(epr),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    if not proc.stdout.readline():
        raise SystemExit(f"sdc_bench: device_sim exited {proc.wait()}")
    return proc


async def run(seconds: float) -> dict[str, Any]:
    epr = uuid.uuid4().urn
    sim = start_sim(epr)
    tapped: dict[int, float] = {}

    def tap(reading: Reading, wall: float) -> None:
        tapped[id(reading)] = wall

    source = SdcSource(epr, tap=tap)
    numeric_ms: list[float] = []
    wave_ms: list[float] = []
    hop_ms: list[float] = []
    samples = {ECG: 0, PLETH: 0}
    lost = {ECG: 0, PLETH: 0}
    next_us: dict[int, float] = {}
    device_lost: list[str] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        readings = source.readings()
        async with asyncio.timeout(60):
            await anext(readings)  # DeviceInfo
        started = time.monotonic()
        async for r in readings:
            out = time.time()
            wall = tapped.pop(id(r), None)
            if isinstance(r, DeviceLost):
                device_lost.append(r.reason)
                next_us.clear()
            elif isinstance(r, Metric) and wall is not None and r.time_us is not None:
                numeric_ms.append((wall - r.time_us / 1e6) * 1000)
            elif isinstance(r, Samples) and r.time_us is not None:
                samples[r.code] += len(r.values)
                expected = next_us.get(r.code)
                gap_us = 0.0 if expected is None else r.time_us - expected
                if gap_us > 1000:
                    lost[r.code] += round(gap_us * r.rate_hz / 1e6)
                next_us[r.code] = r.time_us + len(r.values) * 1e6 / r.rate_hz
                if wall is not None:
                    last_sample = r.time_us / 1e6 + (len(r.values) - 1) / r.rate_hz
                    wave_ms.append((wall - last_sample) * 1000)
            if wall is not None:
                hop_ms.append((out - wall) * 1000)
            if time.monotonic() - started >= seconds:
                break
        elapsed = time.monotonic() - started
    finally:
        await source.aclose()
        sim.terminate()
        sim.wait(15)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "seconds": round(elapsed, 1),
        "numeric_latency_ms": {
            "n": len(numeric_ms),
            "p50": pct(numeric_ms, 50),
            "p99": pct(numeric_ms, 99),
        },
        "waveform_latency_ms": {
            "n": len(wave_ms),
            "p50": pct(wave_ms, 50),
            "p99": pct(wave_ms, 99),
        },
        "bridge_hop_ms": {"p50": pct(hop_ms, 50), "p99": pct(hop_ms, 99)},
        "samples": {"ecg_500hz": samples[ECG], "pleth_125hz": samples[PLETH]},
        "samples_expected": {
            "ecg_500hz": round(elapsed * 500),
            "pleth_125hz": round(elapsed * 125),
        },
        "samples_lost": {"ecg_500hz": lost[ECG], "pleth_125hz": lost[PLETH]},
        "device_lost": device_lost,
        "queue_overflows": source.stats.overflows,
        "report_errors": source.stats.report_errors,
        "consumer_cpu_percent": round(100 * cpu_s / max(elapsed, 1e-9), 1),
        "numeric_latency_mean_ms": round(statistics.fmean(numeric_ms), 2) if numeric_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured run (issue #13: 600)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = p.parse_args(argv)
    figures = asyncio.run(run(args.seconds))
    ok = (
        sum(figures["samples_lost"].values()) == 0
        and not figures["device_lost"]
        and figures["queue_overflows"] == 0
    )
    figures["bar_0_samples_lost"] = "met" if ok else "MISSED"
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
