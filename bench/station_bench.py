"""Central station page benchmark (#14): `p2pmed demo --beds N` (the signaling server and N
synthetic patient nodes in one process, each its own endpoint, session and peer connection) and
headless Chromium as the station page (web/js/station.js), for N in --beds (default 1,4,8,16).

Per N, after every bed is live, for --seconds: vitals one-way latency p50/p99 to the page (each
bed frame's `metrics.latenciesUs`: sender's session timestamp to the page's decode), alarm latency
p99 (the patient node's alarm time to the station's alarm list/tile state; only alarms raised or
escalated during the run: the demo ward's "demo" beds raise one about 35 s after they start),
the page's main-thread busy share (CDP Performance TaskDuration) and frame rate (requestAnimation-
Frame on the station page), CPU per bed of Chromium and of the demo process, and samples lost
(sequence gaps per class and ECG sample gaps on the page). Exits 1 if the largest N misses a bar:
vitals p99 <= 100 ms, alarm p99 <= 200 ms, 0 lost, >= 30 fps.

    .venv/bin/python bench/station_bench.py [--beds 1,4,8,16] [--seconds 120] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
TICK = os.sysconf("SC_CLK_TCK")

SNAPSHOT = """() => {
  const st = window.p2pmedStation;
  const out = { beds: 0, live: 0, lat: [], lost: 0, ecg: 0 };
  for (const b of st.beds.values()) {
    out.beds++;
    if (b.snap && b.snap.live && b.snap.numerics) out.live++;
    const w = b.frame.contentWindow;
    const m = w && w.p2pmed && w.p2pmed.metrics;
    if (!m) continue;
    out.lat.push([m.latenciesUs.length, m.pageUs.length]);
    for (const d of Object.values(m.delivered)) out.lost += d.gaps;
    out.lost += m.ecgSourceGaps;
    out.ecg += m.ecgSamples;
  }
  return out;
}"""

LATENCIES = """(from) => {
  const st = window.p2pmedStation;
  const out = { lat: [], page: [] };
  let i = 0;
  for (const b of st.beds.values()) {
    const m = b.frame.contentWindow.p2pmed.metrics;
    const k = from[i++] || [0, 0];
    out.lat.push(...m.latenciesUs.slice(k[0]));
    out.page.push(...m.pageUs.slice(k[1]));
  }
  return out;
}"""

FPS = """() => { window.__frames = 0;
  const f = () => { window.__frames++; requestAnimationFrame(f); };
  requestAnimationFrame(f); }"""


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def cpu_s(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / TICK


def chromium_pids() -> list[int]:
    """Our descendants running Chromium (the Playwright driver starts it)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [os.getpid()]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            todo.append(c)
            with contextlib.suppress(OSError):
                if b"chromium" in Path(f"/proc/{c}/cmdline").read_bytes():
                    out.append(c)
    return out


async def start_ward(beds: int, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "demo", "--beds", str(beds), "--data-dir", str(data),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60 + beds * 5)
    url = line.decode().strip()
    if "/join#token=" not in url:
        raise RuntimeError(f"demo printed no station URL: {url!r}")
    return proc, url


async def run(n: int, seconds: float, browser: Any, shot: str | None, tmp: Path) -> dict[str, Any]:
    ward, url = await start_ward(n, tmp / f"ward{n}")
    ctx = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await ctx.new_page()
    try:
        await page.goto(url)
        await page.wait_for_function("!!window.p2pmedStation", timeout=20_000)
        end = time.monotonic() + 60 + 5 * n
        while True:
            s = await page.evaluate(SNAPSHOT)
            if s["beds"] == n and s["live"] == n:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"{s['live']}/{n} beds live after the warm-up")
            await asyncio.sleep(0.5)
        cdp = await ctx.new_cdp_session(page)
        await cdp.send("Performance.enable")

        async def task_s() -> float:
            ms = (await cdp.send("Performance.getMetrics"))["metrics"]
            return float(next(m["value"] for m in ms if m["name"] == "TaskDuration"))

        pids = chromium_pids()
        c0 = sum(cpu_s(p) for p in pids)
        w0 = cpu_s(ward.pid)
        a0 = await page.evaluate("window.p2pmedStation.metrics.alarmLatencyUs.length")
        lost0 = s["lost"]
        t0 = await task_s()
        await page.evaluate(FPS)
        wall0 = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - wall0
        frames = await page.evaluate("window.__frames")
        busy = (await task_s() - t0) / wall
        cpu_chromium = sum(cpu_s(p) for p in chromium_pids()) - c0
        cpu_ward = cpu_s(ward.pid) - w0
        s1 = await page.evaluate(SNAPSHOT)
        lat = await page.evaluate(LATENCIES, s["lat"])
        alarms = await page.evaluate(
            "(a) => window.p2pmedStation.metrics.alarmLatencyUs.slice(a)", a0
        )
        if shot:
            await page.screenshot(path=shot, full_page=True)
        ms = [x / 1000 for x in lat["lat"]]
        page_ms = [x / 1000 for x in lat["page"]]
        am = [x / 1000 for x in alarms]
        return {
            "beds": n,
            "vitals_n": len(ms),
            "vitals_p50_ms": pct(ms, 50),
            "vitals_p99_ms": pct(ms, 99),
            "page_p99_ms": pct(page_ms, 99),
            "alarm_n": len(am),
            "alarm_p99_ms": pct(am, 99),
            "busy": busy,
            "fps": frames / wall,
            "cpu_chromium_per_bed": cpu_chromium / wall / n,
            "cpu_ward_per_bed": cpu_ward / wall / n,
            "lost": s1["lost"] - lost0,
            "ecg_samples": s1["ecg"] - s["ecg"],
            "seconds": wall,
        }
    finally:
        await ctx.close()
        ward.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(ward.wait(), 20)
        except TimeoutError:
            ward.kill()
            await ward.wait()


def fmt(v: float | None, f: str = ".1f") -> str:
    return "-" if v is None else format(v, f)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beds", default="1,4,8,16")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--screenshot", help="PNG of the station page at the largest N")
    a = ap.parse_args()
    counts = [int(x) for x in a.beds.split(",")]
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-bench-") as d:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                for n in counts:
                    shot = a.screenshot if n == max(counts) else None
                    rows.append(await run(n, a.seconds, browser, shot, Path(d)))
                    r = rows[-1]
                    print(
                        f"beds {n:3d}: vitals p50 {fmt(r['vitals_p50_ms'])} ms p99"
                        f" {fmt(r['vitals_p99_ms'])} ms (n={r['vitals_n']}; in the page p99"
                        f" {fmt(r['page_p99_ms'])} ms), alarm p99"
                        f" {fmt(r['alarm_p99_ms'])} ms (n={r['alarm_n']}), main thread busy"
                        f" {r['busy'] * 100:.0f} %, {r['fps']:.0f} fps, CPU per bed: page"
                        f" {r['cpu_chromium_per_bed'] * 100:.1f} %, demo process"
                        f" {r['cpu_ward_per_bed'] * 100:.1f} %, lost {r['lost']}"
                        f" (ECG samples {r['ecg_samples']}, {r['seconds']:.0f} s)",
                        flush=True,
                    )
            finally:
                await browser.close()
    top = rows[-1]
    bad = []
    if top["vitals_p99_ms"] is None or top["vitals_p99_ms"] > 100:
        bad.append("vitals p99 > 100 ms")
    if top["alarm_p99_ms"] is not None and top["alarm_p99_ms"] > 200:
        bad.append("alarm p99 > 200 ms")
    if top["lost"]:
        bad.append("samples lost")
    if top["fps"] < 30:
        bad.append("fps < 30")
    if top["alarm_n"] == 0:
        print("note: no alarm was raised during the run (use --seconds >= 45)")
    if bad:
        print(f"BELOW THE BARS at {top['beds']} beds: " + ", ".join(bad))
        return 1
    print(f"bars met at {top['beds']} beds")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
