"""`p2pmed demo --beds 40`: more beds than the server's default per-address join burst (30).
Every bed and every bed connection of a station on the same machine joins from 127.0.0.1, so
the demo's own server must admit them all at once: each bed reaches the terminal station."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.node.conftest import ROOT, start_proc

BEDS = 40  # > 30, the default join burst per address


async def test_demo_more_beds_than_the_join_burst(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "demo",
        "--beds",
        str(BEDS),
        "--data-dir",
        str(tmp_path / "demo"),
        cwd=str(ROOT),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    st = None
    try:
        async with asyncio.timeout(180):
            url = (await proc.stdout.readline()).decode().strip()
        assert "/join#token=" in url, "the demo printed no station URL"
        st = await start_proc(url, "station", "--data-dir", str(tmp_path / "st"))
        beds = [f"bed{i:02d}" for i in range(1, BEDS + 1)]
        for b in beds:
            await st.w.wait_for("message", bed=b, kind="numerics", timeout=240)
        assert not st.w.of("error", code="bed-join")  # no bed join refused, even for a while
        assert len({e["peer"] for e in st.w.of("handshake")}) == BEDS
    finally:
        if st is not None:
            await st.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
    err = (await proc.stderr.read()).decode()
    assert proc.returncode == 0, err[-2000:]
    assert f"bed{BEDS}: " in err
