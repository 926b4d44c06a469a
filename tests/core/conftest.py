"""Every test that uses the simulated network runs twice: virtual time starting at 0 (a machine
that booted a moment ago) and at 1e9 s (one that has been up for decades)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.core import simnet

SIM_STARTS = (0.0, 1e9)


def _uses_simnet(module: ModuleType | None) -> bool:
    return module is not None and any(
        getattr(obj, "__module__", None) in ("tests.core.simnet", "tests.core.sessionkit")
        for obj in vars(module).values()
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_start" in metafunc.fixturenames and _uses_simnet(metafunc.module):
        metafunc.parametrize(
            "sim_start", SIM_STARTS, ids=[f"t0={t:g}" for t in SIM_STARTS], indirect=True
        )


@pytest.fixture(autouse=True)
def sim_start(request: pytest.FixtureRequest) -> Iterator[float]:
    start: float = getattr(request, "param", simnet.START)
    saved = simnet.START
    simnet.START = start
    yield start
    simnet.START = saved
