"""Central station benchmark (#14): `p2pmed demo --beds N` (the signaling server and N synthetic
patient nodes in one process, each its own endpoint, session and peer connection: ECG 500 Hz,
pleth 125 Hz, numerics every second) watched by a station, for N in --beds (default
1,4,8,16,32,64), --seconds per N (default 120) after every bed is live. Two runs per N, each
with a fresh ward:

- page: headless Chromium as the station page (web/js/station.js): vitals one-way latency
  p50/p99 to the page (each bed frame's `metrics.latenciesUs`: the patient's session timestamp
  to the page's decode), CRITICAL alarm latency p99 (the patient node's alarm time to the
  station's alarm list; alarms raised or escalated during the run: the ward's "demo" and
  "alarm" beds raise some), the page's main-thread busy share (CDP Performance TaskDuration)
  and frame rate (requestAnimationFrame on the station page), CPU per bed of Chromium and of
  the demo process, samples lost (sequence gaps per class and ECG sample gaps on the page);
- terminal: `p2pmed node --join <station URL> --json` (the terminal station, one process):
  vitals latency (each `message` event's latency_ms: the patient's session timestamp to the
  station node's decode), alarm latency (`alarm` events: the alarm frame's timestamp to the
  decode), CPU per bed of the station and of the demo process, samples lost (sequence gaps
  per bed and class, `waveform-gap` events).

A count that cannot run (the demo or the station cannot start, not every bed goes live within
the warm-up) is reported with the reason, and larger counts of that run are skipped: the limit
lies between the last count that ran and that one. The table at the end shows how each figure
grows with N, then for every bar the largest N meeting it. Exits 1 when a bar is missed at 16
beds (or, when 16 is not run, at the largest N): vitals p99 <= 100 ms, alarm p99 <= 200 ms,
0 lost, and for the page >= 30 fps. Larger N is the issue's aim, reported but not enforced.

    .venv/bin/python bench/station_bench.py [--beds 1,4,8,16,32,64] [--seconds 120]
        [--runs page,terminal] [--screenshot PNG] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
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
MAX_BEDS = 64  # p2pmed demo --beds and the server's --max-beds-per-ward
BAR_BEDS = 16
BARS = {"vitals_p99_ms": 100.0, "alarm_p99_ms": 200.0, "fps": 30.0}

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


class CannotRun(Exception):
    """This bed count cannot run on this machine; the message says why."""


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


def warmup_s(n: int) -> float:
    # every bed and every station bed connection comes from 127.0.0.1 here; the demo's server
    # lets that many joins in at once (node_cli.py), so this only bounds a slow start
    return 60 + 5 * n


async def start_ward(beds: int, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    data.mkdir(parents=True, exist_ok=True)
    err = data / "demo.stderr"  # why the demo failed, for the report
    with err.open("wb") as errf:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2pmed", "demo", "--beds", str(beds), "--data-dir", str(data),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errf,
            cwd=str(ROOT),
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), warmup_s(beds))
    except TimeoutError:
        await stop(proc)
        why = f"p2pmed demo --beds {beds} printed no station URL in {warmup_s(beds):.0f} s"
        raise CannotRun(why) from None
    url = line.decode().strip()
    if "/join#token=" not in url:
        await stop(proc)
        tail = err.read_text(errors="replace").strip().splitlines()[-2:]
        raise CannotRun(f"p2pmed demo --beds {beds} failed: {' / '.join(tail)[:300]}")
    return proc, url


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def run_page(
    n: int, seconds: float, browser: Any, shot: str | None, tmp: Path
) -> dict[str, Any]:
    ward, url = await start_ward(n, tmp / f"page{n}")
    ctx = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await ctx.new_page()
    try:
        await page.goto(url)
        t_join = time.monotonic()
        end = t_join + warmup_s(n)
        # polled with evaluate: wait_for_function's string predicates need eval, which the
        # page's CSP refuses
        while not await page.evaluate("!!window.p2pmedStation"):
            if time.monotonic() > t_join + 20:
                raise CannotRun("the station page did not start in 20 s")
            await asyncio.sleep(0.2)
        while True:
            s = await page.evaluate(SNAPSHOT)
            if s["beds"] == n and s["live"] == n:
                break
            if ward.returncode is not None:
                raise CannotRun(f"the demo process exited ({ward.returncode}) during the warm-up")
            if time.monotonic() > end:
                raise CannotRun(
                    f"{s['live']}/{n} beds live on the page after a {warmup_s(n):.0f} s warm-up"
                )
            await asyncio.sleep(0.5)
        live_s = time.monotonic() - t_join
        cdp = await ctx.new_cdp_session(page)
        await cdp.send("Performance.enable")

        async def task_s() -> float:
            ms = (await cdp.send("Performance.getMetrics"))["metrics"]
            return float(next(m["value"] for m in ms if m["name"] == "TaskDuration"))

        pids = chromium_pids()
        c0 = sum(cpu_s(p) for p in pids)
        w0 = cpu_s(ward.pid)
        a0 = await page.evaluate("window.p2pmedStation.metrics.alarmLatencyUs.length")
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
        am = [x / 1000 for x in alarms]
        return {
            "run": "page",
            "beds": n,
            "live_after_s": live_s,
            "vitals_n": len(ms),
            "vitals_p50_ms": pct(ms, 50),
            "vitals_p99_ms": pct(ms, 99),
            "page_p99_ms": pct([x / 1000 for x in lat["page"]], 99),
            "alarm_n": len(am),
            "alarm_p99_ms": pct(am, 99),
            "busy": busy,
            "fps": frames / wall,
            "cpu_station_per_bed": cpu_chromium / wall / n,
            "cpu_beds_per_bed": cpu_ward / wall / n,
            "lost": s1["lost"] - s["lost"],
            "ecg_samples": s1["ecg"] - s["ecg"],
            "seconds": wall,
        }
    finally:
        await ctx.close()
        await stop(ward)


class TerminalReader:
    """Reads the terminal station's --json events; counts only while `measuring`."""

    def __init__(self) -> None:
        self.live: set[str] = set()  # beds whose numerics arrived
        self.last: dict[tuple[str, str], int] = {}  # (bed, class) -> last seq
        self.measuring = False
        self.lat: list[float] = []
        self.alarms: list[float] = []
        self.lost = 0
        self.ecg = 0
        self.errors: list[str] = []

    def line(self, raw: bytes) -> None:
        try:
            e = json.loads(raw)
        except ValueError:
            return
        name, bed = e.get("event"), e.get("bed")
        if name == "error" and len(self.errors) < 5:
            self.errors.append(f"{e.get('code')}: {e.get('message')}")
        if not isinstance(bed, str):
            return
        if name == "message":
            key = (bed, str(e.get("cls")))
            seq = int(e.get("seq", 0))
            prev = self.last.get(key)
            self.last[key] = seq
            if e.get("kind") == "numerics":
                self.live.add(bed)
            if not self.measuring:
                return
            # a batch frame carries several messages under one seq
            if prev is not None and seq not in (prev, prev + 1):
                self.lost += 1
            if not e.get("replayed"):
                self.lat.append(float(e["latency_ms"]))
            if e.get("kind") == "waveform" and e.get("signal") != "PLETH":
                self.ecg += int(e.get("n", 0))
        elif self.measuring and name == "waveform-gap":
            self.lost += 1
        elif self.measuring and name == "alarm" and e.get("state") != "CLEARED":
            self.alarms.append(float(e["latency_ms"]))


async def run_terminal(n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    ward, url = await start_ward(n, tmp / f"term{n}")
    err = tmp / f"term{n}.stderr"
    with err.open("wb") as errf:
        st = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2pmed", "node", "--join", url, "--json",
            "--data-dir", str(tmp / f"term{n}-station"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errf,
            cwd=str(ROOT), limit=1 << 20,
        )  # fmt: skip
    rd = TerminalReader()

    async def pump() -> None:
        assert st.stdout is not None
        while line := await st.stdout.readline():
            rd.line(line)

    reader = asyncio.create_task(pump())
    try:
        t_join = time.monotonic()
        end = t_join + warmup_s(n)
        while len(rd.live) < n:
            if st.returncode is not None or reader.done():
                tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                raise CannotRun(
                    f"the terminal station exited ({st.returncode}): {' / '.join(tail)}"
                )
            if time.monotonic() > end:
                raise CannotRun(
                    f"{len(rd.live)}/{n} beds live on the terminal station after a"
                    f" {warmup_s(n):.0f} s warm-up {rd.errors[:2]}"
                )
            await asyncio.sleep(0.5)
        live_s = time.monotonic() - t_join
        s0, w0 = cpu_s(st.pid), cpu_s(ward.pid)
        rd.measuring = True
        wall0 = time.monotonic()
        await asyncio.sleep(seconds)
        rd.measuring = False
        wall = time.monotonic() - wall0
        cpu_station = cpu_s(st.pid) - s0
        cpu_ward = cpu_s(ward.pid) - w0
        return {
            "run": "terminal",
            "beds": n,
            "live_after_s": live_s,
            "vitals_n": len(rd.lat),
            "vitals_p50_ms": pct(rd.lat, 50),
            "vitals_p99_ms": pct(rd.lat, 99),
            "alarm_n": len(rd.alarms),
            "alarm_p99_ms": pct(rd.alarms, 99),
            "cpu_station_per_bed": cpu_station / wall / n,
            "cpu_beds_per_bed": cpu_ward / wall / n,
            "lost": rd.lost,
            "ecg_samples": rd.ecg,
            "seconds": wall,
        }
    finally:
        await stop(st)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await stop(ward)


def fmt(v: float | None, f: str = ".1f") -> str:
    return "-" if v is None else format(v, f)


def line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['run']:8s} beds {r['beds']:3d}: NOT MEASURED: {r['error']}"
    page = (
        f", main thread busy {r['busy'] * 100:.0f} %, {r['fps']:.0f} fps"
        f" (in the page p99 {fmt(r['page_p99_ms'])} ms)"
        if r["run"] == "page"
        else ""
    )
    return (
        f"{r['run']:8s} beds {r['beds']:3d}: vitals p50 {fmt(r['vitals_p50_ms'])} ms p99"
        f" {fmt(r['vitals_p99_ms'])} ms (n={r['vitals_n']}), alarm p99"
        f" {fmt(r['alarm_p99_ms'])} ms (n={r['alarm_n']}){page}, CPU per bed: station"
        f" {r['cpu_station_per_bed'] * 100:.1f} %, beds {r['cpu_beds_per_bed'] * 100:.1f} %,"
        f" lost {r['lost']} (ECG samples {r['ecg_samples']}, {r['seconds']:.0f} s,"
        f" all live after {r['live_after_s']:.0f} s)"
    )


def misses(r: dict[str, Any]) -> list[str]:
    """The bars this run misses."""
    if "error" in r:
        return [f"not measured ({r['error']})"]
    bad = []
    if r["vitals_p99_ms"] is None or r["vitals_p99_ms"] > BARS["vitals_p99_ms"]:
        bad.append(f"vitals p99 {fmt(r['vitals_p99_ms'])} > {BARS['vitals_p99_ms']:.0f} ms")
    if r["alarm_p99_ms"] is not None and r["alarm_p99_ms"] > BARS["alarm_p99_ms"]:
        bad.append(f"alarm p99 {fmt(r['alarm_p99_ms'])} > {BARS['alarm_p99_ms']:.0f} ms")
    if r["lost"]:
        bad.append(f"{r['lost']} lost")
    if r["run"] == "page" and r["fps"] < BARS["fps"]:
        bad.append(f"{r['fps']:.0f} fps < {BARS['fps']:.0f}")
    return bad


BAR_TESTS = (
    ("vitals p99", lambda r: (r["vitals_p99_ms"] or 1e9) <= BARS["vitals_p99_ms"]),
    ("alarm p99", lambda r: (r["alarm_p99_ms"] or 0) <= BARS["alarm_p99_ms"]),
    ("0 lost", lambda r: r["lost"] == 0),
    ("30 fps", lambda r: r["fps"] >= BARS["fps"]),
)


def table(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for run, title in (
        ("page", "Station page (headless Chromium)"),
        ("terminal", "Terminal station (p2pmed node --json)"),
    ):
        rs = [r for r in rows if r["run"] == run]
        if not rs:
            continue
        page = run == "page"
        out += ["", f"{title}:", ""]
        out.append(
            "| beds | vitals p50 / p99 | alarm p99 (n) |"
            + (" main thread busy | fps |" if page else "")
            + " CPU per bed: station / beds | lost |"
        )
        out.append("|---|---|---|" + ("---|---|" if page else "") + "---|---|")
        for r in rs:
            if "error" in r:
                out.append(f"| {r['beds']} | not measured: {r['error']} |")
                continue
            out.append(
                f"| {r['beds']} | {fmt(r['vitals_p50_ms'])} / {fmt(r['vitals_p99_ms'])} ms"
                f" | {fmt(r['alarm_p99_ms'])} ms ({r['alarm_n']}) |"
                + (f" {r['busy'] * 100:.0f} % | {r['fps']:.0f} |" if page else "")
                + f" {r['cpu_station_per_bed'] * 100:.1f} % / {r['cpu_beds_per_bed'] * 100:.1f} %"
                f" | {r['lost']} |"
            )
        # where the limit is: for each bar, the largest count meeting it (counts run in order)
        ok = [r for r in rs if "error" not in r]
        for bar, test in BAR_TESTS:
            if bar == "30 fps" and not page:
                continue
            met = [r["beds"] for r in ok if test(r)]
            missed = [r["beds"] for r in ok if not test(r)]
            first_miss = f"; first missed at {missed[0]} beds" if missed else ""
            out.append(f"  {bar}: met up to {max(met) if met else 'no'} beds{first_miss}")
        failed = [r for r in rs if "error" in r]
        if failed:
            out.append(f"  limit: {failed[0]['beds']} beds could not run: {failed[0]['error']}")
    return out


async def one(
    run: str,
    n: int,
    seconds: float,
    browser: Any,
    shot: str | None,
    tmp: Path,
    failed: dict[str, int],
) -> dict[str, Any]:
    """One run at one count, or why it could not run (then larger counts are skipped)."""
    if n > MAX_BEDS:
        why = f"a ward holds at most {MAX_BEDS} beds (demo --beds, server --max-beds-per-ward)"
        return {"run": run, "beds": n, "error": why}
    if run in failed:
        return {"run": run, "beds": n, "error": f"skipped: {failed[run]} beds could not run"}
    try:
        if run == "page":
            return await run_page(n, seconds, browser, shot, tmp)
        return await run_terminal(n, seconds, tmp)
    except CannotRun as exc:
        failed[run] = n
        return {"run": run, "beds": n, "error": str(exc)}
    except Exception as exc:  # any failure of one count is reported, not fatal
        failed[run] = n
        return {"run": run, "beds": n, "error": f"failed: {type(exc).__name__}: {exc}"[:300]}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beds", default="1,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--runs", default="page,terminal", help="page, terminal or both")
    ap.add_argument("--screenshot", help="PNG of the station page at the largest N")
    ap.add_argument("--json", help="write every run's figures to this file")
    a = ap.parse_args()
    counts = [int(x) for x in a.beds.split(",")]
    runs = [x for x in a.runs.split(",") if x]
    if not counts or any(n < 1 for n in counts) or not set(runs) <= {"page", "terminal"}:
        ap.error("--beds: counts >= 1; --runs: page and/or terminal")
    print(
        f"station bench: beds {counts}, {a.seconds:.0f} s each, runs {runs}; load average"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-bench-") as d:
        async with async_playwright() as pw:
            browser = None
            if "page" in runs:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, args=ARGS, headless=True
                )
            try:
                failed: dict[str, int] = {}  # run -> the count that could not run
                for n in counts:
                    for run in runs:
                        shot = a.screenshot if n == max(counts) else None
                        r = await one(run, n, a.seconds, browser, shot, Path(d), failed)
                        rows.append(r)
                        print(line(r), flush=True)
            finally:
                if browser is not None:
                    await browser.close()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    print("\n".join(table(rows)))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    measured = [r["beds"] for r in rows if "error" not in r]
    at = BAR_BEDS if BAR_BEDS in counts else max(counts)
    bad = [f"{r['run']}: " + ", ".join(misses(r)) for r in rows if r["beds"] == at and misses(r)]
    if not measured:
        print("nothing measured")
        return 1
    if bad:
        print(f"BELOW THE BARS at {at} beds: " + "; ".join(bad))
        return 1
    print(f"bars met at {at} beds")
    return 0


async def stoppable() -> int:
    """main(), with SIGINT/SIGTERM ending it through its finally blocks: the demo and station
    processes it started are stopped, never left running after the bench."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await main()
    except asyncio.CancelledError:
        print("station bench: stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(asyncio.run(stoppable()))
