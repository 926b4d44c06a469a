"""`p2pmed demo`: server, tokens, a synthetic patient and (here) a terminal clinician,
with no configuration; prints the clinician join URL; stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp

from tests.node.conftest import ROOT


async def test_demo_runs_patient_and_clinician_until_ctrl_c(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "p2pmed",
        "demo",
        "--clinician",
        "--json",
        "--media",
        "none",
        "--data-dir",
        str(tmp_path),
        cwd=str(ROOT),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    url = ""
    events: list[dict] = []  # type: ignore[type-arg]
    try:
        async with asyncio.timeout(90):
            while not any(e.get("event") == "message" for e in events) or not url:
                line = (await proc.stdout.readline()).decode()
                assert line, "demo exited early"
                if line.startswith("http"):
                    url = line.strip()
                else:
                    events.append(json.loads(line))
        assert "/join#token=" in url
        roles = {e["role"] for e in events if e["event"] == "joined"}
        assert roles == {"patient", "clinician"}
        assert any(e["event"] == "handshake" for e in events)
        # the join URL points at the running server
        base = url.split("/join#")[0]
        async with aiohttp.ClientSession() as http, http.get(base + "/turn-credentials") as r:
            assert r.status in (401, 403, 503)  # the server answers (no credentials sent)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    err = (await proc.stderr.read()).decode()
    assert proc.returncode == 0, err
    assert "p2pmed demo" in err and "Ctrl-C" in err


async def test_demo_prints_the_patient_sas_for_the_clinician_to_compare(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "demo", "--clinician", "--media", "none",
        "--data-dir", str(tmp_path),
        cwd=str(ROOT), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(90):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "demo exited early"
                if "patient SAS with" in line:
                    break
        sas = line.split(": ", 1)[1].split(" (")[0]
        assert len(sas) == 7 and sas[3] == " " and sas.replace(" ", "").isdigit()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
