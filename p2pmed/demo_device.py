"""`p2pmed demo --source sdc`: a simulated bedside monitor next to the demo's patient node.

The monitor is `p2pmed device-sim` (an IEEE 11073 SDC provider on sdc11073) in a process of
its own, bound to a bed of its own; the demo's patient node discovers it by that bed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

DEMO_PATIENT = "DEMO-PATIENT-1"
START_TIMEOUT_S = 60.0  # sdc11073 takes a few seconds to serve on a loaded machine


class DemoDeviceError(Exception):
    pass


@dataclass(frozen=True)
class DemoSource:
    """What the demo's patient node is given (NodeConfig.build keywords), and its name."""

    node_kw: dict[str, Any] = field(default_factory=dict)
    describe: str = "synthetic patient"


@contextlib.asynccontextmanager
async def demo_source(source: str, data_dir: str) -> AsyncIterator[DemoSource]:
    """`synthetic`: nothing to start. `sdc`: a device-sim process serving until the demo
    ends (its log in DATA_DIR/device-sim.log)."""
    if source == "synthetic":
        yield DemoSource()
        return
    if source != "sdc":
        raise DemoDeviceError(f"demo --source must be synthetic or sdc, got {source!r}")
    bed = "demo-bed-" + secrets.token_hex(4)  # a bed of its own: no other provider is picked
    log = os.path.join(data_dir, "device-sim.log")
    with open(log, "ab") as err:  # the process holds its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2pmed", "device-sim", "--json",
            "--bed", bed, "--patient", DEMO_PATIENT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        info = await _serving(proc, log)
        yield DemoSource(
            {"source": f"sdc:discover?bed={bed}", "fhir_patient": DEMO_PATIENT},
            f"SDC monitor {info.get('epr', '?')} at bed {bed}",
        )
    finally:
        await _stop(proc)


async def _serving(proc: asyncio.subprocess.Process, log: str) -> dict[str, Any]:
    """The JSON line device-sim prints once it serves."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
    except TimeoutError:
        raise DemoDeviceError(
            f"the simulated SDC monitor did not start within {START_TIMEOUT_S:.0f} s; see {log}"
        ) from None
    try:
        info = json.loads(line) if line else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise DemoDeviceError(f"the simulated SDC monitor did not start; see {log}")
    return info


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
