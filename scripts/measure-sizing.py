#!/usr/bin/env python3
"""Sizing figures for docs/operations.md, measured on this machine with real processes:

    .venv/bin/python scripts/measure-sizing.py [--endpoints 200] [--seconds 20]

- the signaling server's memory (RSS) per joined, idle endpoint (ENDPOINTS WebSockets, one
  session of one patient each) and at rest;
- a patient node and a clinician node streaming the synthetic source (ECG 500 Hz, pleth,
  numerics) over a direct path: RSS and CPU (% of one core) over SECONDS.
Prints one JSON object. Loopback only, free ports, temporary data dirs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from signaling.testing import server_process  # noqa: E402
from signaling.tokens import mint, token_key  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime


def _token(data: Path, session: str, role: str) -> str:
    tok, _ = mint(
        token_key(data, create=False),
        session=session,
        role=role,
        ttl=600,
        issuer="p2pmed-signaling",
        audience="p2pmed-join",
    )
    return tok


async def server_figures(tmp: Path, n: int) -> dict[str, float]:
    data = tmp / "srv"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        server_process(data, "--join-rate", "100000", nofile=4096) as srv,
    ):
        pid = srv.proc.pid
        # one warm-up join so imports and caches are not counted per endpoint
        socks = []
        for i in range(n + 1):
            ws = await http.ws_connect(srv.ws_url)
            await ws.send_json(
                {"type": "join", "token": _token(data, f"s{i}", "patient"), "endpoint_id": f"e{i}"}
            )
            while (await ws.receive_json(timeout=30))["type"] != "joined":
                pass
            socks.append(ws)
            if i == 0:
                await asyncio.sleep(1.0)
                base = rss_kib(pid)
        await asyncio.sleep(1.0)
        full = rss_kib(pid)
        for ws in socks:
            await ws.close()
        await srv.stop()
    return {
        "server_rss_mib_with_1_endpoint": round(base / 1024, 1),
        "server_kib_per_idle_endpoint": round((full - base) / n, 1),
        "endpoints": n,
    }


async def node_figures(tmp: Path, seconds: float) -> dict[str, float]:
    data = tmp / "srv2"
    async with server_process(data) as srv:
        nodes = {}
        for role in ("patient", "clinician"):
            url = f"{srv.url}/join#token={_token(data, 'bed-1', role)}"
            nodes[role] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "p2pmed", "node", "--join", url, "--json",
                "--media", "none", "--data-dir", str(tmp / role),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
            )  # fmt: skip
        clin = nodes["clinician"]
        assert clin.stdout is not None
        messages = 0
        async with asyncio.timeout(60):  # streaming over the direct path
            while messages < 50:
                ev = json.loads(await clin.stdout.readline())
                if ev.get("event") == "message" and ev.get("path") == "direct":
                    messages += 1
        drain = asyncio.ensure_future(clin.stdout.read())
        pat_out = nodes["patient"].stdout
        assert pat_out is not None
        drain2 = asyncio.ensure_future(pat_out.read())
        c0 = {r: cpu_s(p.pid) for r, p in nodes.items()}
        await asyncio.sleep(seconds)
        out: dict[str, float] = {}
        for role, p in nodes.items():
            out[f"{role}_rss_mib"] = round(rss_kib(p.pid) / 1024, 1)
            out[f"{role}_cpu_pct_one_core"] = round(100 * (cpu_s(p.pid) - c0[role]) / seconds, 1)
            p.terminate()
            await p.wait()
        await drain
        await drain2
        await srv.stop()
    out["seconds"] = seconds
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        figures = {**await server_figures(tmp, args.endpoints)}
        figures.update(await node_figures(tmp, args.seconds))
    figures["cpus"] = os.cpu_count() or 0
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
