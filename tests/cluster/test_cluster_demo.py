"""deploy/cluster-demo.sh: Redis, three servers, HAProxy and a demo patient in one command;
a clinician node joined with the URL it prints receives the patient's vitals through
HAProxy, and stopping the script stops everything it started."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp

from signaling.testing import free_port
from tests.node.conftest import ROOT, start_proc


async def test_cluster_demo_script(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "deploy" / "cluster-demo.sh"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "P2PMED_LB_PORT": str(port)},
    )
    assert proc.stdout is not None
    out: list[str] = []
    url = work = None
    try:
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "".join(out)
            out.append(line)
            if m := re.search(r"logs in (\S+)", line):
                work = Path(m[1])
            if line.startswith("clinician URL: "):
                url = line.split(": ", 1)[1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/join#token=")
        async with aiohttp.ClientSession() as http, http.get(url.split("#")[0]) as r:
            assert r.status == 200  # the page, through HAProxy
        clinician = await start_proc(url, "clinician", "--data-dir", str(tmp_path / "c"))
        try:
            await clinician.w.wait_for("joined")
            await clinician.w.wait_count("message", 20)
        finally:
            await clinician.stop()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            rc = await asyncio.wait_for(proc.wait(), 30)
            assert rc == 130, "".join(out)
    assert work is not None and not work.exists()  # cleaned up, its processes stopped
