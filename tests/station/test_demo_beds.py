"""`p2pmed demo --beds N`: N synthetic beds in one process; the station URL it prints last
opens a station (a real station node process) that sees every bed."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.node.conftest import ROOT, start_proc


async def test_demo_beds_and_station(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "demo",
        "--beds",
        "4",
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
        async with asyncio.timeout(60):
            url = (await proc.stdout.readline()).decode().strip()
        assert "/join#token=" in url
        st = await start_proc(url, "station", "--data-dir", str(tmp_path / "st"))
        beds = ("bed01", "bed02", "bed03", "bed04")
        for b in beds:
            await st.w.wait_for("message", bed=b, kind="numerics")
        await st.w.wait_for("alarm", bed="bed04")  # an "alarm" bed among quiet ones
        assert not st.w.of("alarm", bed="bed02")
        # each bed its own endpoint, session and identity
        assert len({e["peer"] for e in st.w.of("handshake")}) == 4
        assert len({e["fingerprint"] for e in st.w.of("identity-pinned")}) == 4
    finally:
        if st is not None:
            await st.stop()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    err = (await proc.stderr.read()).decode()
    assert proc.returncode == 0, err
    assert "bed03: normal" in err
