"""Where does a vitals message's time go, node -> page? Per-message timestamps at each step.

Runs the same setup as bench/web_bench.py (real signaling server, real patient node, headless
Chromium), but the node runs under bench/trace_node.py and the page gets an init script that
records, for every DataChannel message, its arrival time and frame header, plus the page's long
tasks and main-thread stalls. Every MEDIUM DATA frame the page receives is then matched by seq
with the node's records, and its latency split into steps:

    queue   session.send (timestamp in the frame header) -> handed to aiortc
    sctp    handed to aiortc -> first SCTP DATA chunk sent (aiortc's queue, cwnd, the loop)
    net     SCTP chunk sent -> Chromium fires `message` on the page (DTLS, UDP, dcSCTP, IPC)
    page    that `message` event -> the app delivered it (window.p2pmed.metrics)

It prints percentiles per step and the slowest messages with their steps and whatever else
happened nearby (SACKs, T3 expiries, retransmissions, persist/GC/loop stalls, page long tasks).

    .venv/bin/python bench/latency_trace.py [--seconds 60] [--rate 1] [--patch rto-min]
        [--joins 3] [--store-dir /dev/shm]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.async_api import async_playwright  # noqa: E402

from bench.web_bench import first_ecg, pct  # noqa: E402
from signaling.testing import running_server  # noqa: E402
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.web.node_proc import NodeProc  # noqa: E402

PAGE_PROBE = """
(() => {
  const T = (window.__trace = { rx: [], lag: [], long: [] });
  const abs = () => (performance.timeOrigin + performance.now()) / 1000;
  const orig = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (...a) {
    const ch = orig.apply(this, a);
    ch.addEventListener("message", (e) => {
      const t = abs();
      if (!(e.data instanceof ArrayBuffer) || e.data.byteLength < 44) return;
      const v = new DataView(e.data);
      const seq = Number(v.getBigUint64(16));
      T.rx.push([t, v.getUint8(1), v.getUint8(3), seq, Number(v.getBigUint64(32)) / 1e6]);
    });
    return ch;
  };
  let due = abs() + 0.005;
  setInterval(() => {
    const t = abs();
    if (t - due > 0.02) T.lag.push([due, (t - due) * 1000]);
    due = t + 0.005;
  }, 5);
  try {
    new PerformanceObserver((l) => {
      for (const e of l.getEntries())
        T.long.push([(performance.timeOrigin + e.startTime) / 1000, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) {}
})();
"""


class TracedNode(NodeProc):
    def __init__(self, url: str, data_dir: str, trace: str, *extra: str) -> None:
        super().__init__(url, data_dir, *extra)
        self.args = [sys.executable, str(REPO / "bench" / "trace_node.py"), *self.args[3:]]
        self.trace = trace


async def collect(
    seconds: float, rate: float, patch: str, joins: int, store_dir: str | None
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="p2pmed-trace-") as d,
        tempfile.TemporaryDirectory(prefix="p2pmed-trace-store-", dir=store_dir) as sd,
    ):
        trace_file = str(Path(d) / "node-trace.json")
        os.environ["P2PMED_TRACE_OUT"] = trace_file
        os.environ["P2PMED_TRACE_PATCH"] = patch
        async with running_server(Path(d) / "server") as srv:
            purl = srv.join_url(srv.mint("bench", "patient"))
            extra = ("--scenario", "normal", "--media", "none", "--rate", str(rate))
            node = TracedNode(purl, str(Path(sd) / "patient"), trace_file, *extra)
            async with node:
                await node.wait_for(lambda e: e.get("event") == "joined")
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(
                        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                    )
                    # one context: the page keeps its identity key (IndexedDB), which the
                    # patient pinned for this consultation; earlier joins come and go
                    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                    for _ in range(joins - 1):
                        page = await ctx.new_page()
                        await page.goto(srv.join_url(srv.mint("bench", "clinician")))
                        await first_ecg(page)
                        await page.close()
                    await ctx.add_init_script(PAGE_PROBE)
                    page = await ctx.new_page()
                    await page.goto(srv.join_url(srv.mint("bench", "clinician")))
                    await first_ecg(page)
                    await asyncio.sleep(2.0)
                    await page.evaluate(
                        "window.p2pmed.metrics.latenciesUs.length = 0;"
                        " window.p2pmed.metrics.pageUs.length = 0;"
                        " window.__trace.rx.length = 0"
                    )
                    await asyncio.sleep(seconds)
                    page_trace = await page.evaluate("window.__trace")
                    page_ms = [
                        u / 1000 for u in await page.evaluate("window.p2pmed.metrics.pageUs")
                    ]
                    lat_ms = [
                        u / 1000 for u in await page.evaluate("window.p2pmed.metrics.latenciesUs")
                    ]
                    await ctx.close()
                    await browser.close()
            node_trace = json.loads(Path(trace_file).read_text())
    return {"node": node_trace, "page": page_trace, "page_ms": page_ms, "lat_ms": lat_ms}


def analyse(data: dict[str, Any], worst: int = 12) -> list[dict[str, Any]]:
    node, page = data["node"], data["page"]
    handoff = {}
    for t, ftype, cls, seq, _n in node["handoff"]:
        if ftype == 1 and cls == 2:
            handoff.setdefault(seq, t)
    wire: dict[int, float] = {}
    resent: dict[int, int] = {}
    for t, cls, seq, _tsn, count in node["wire"]:
        if cls == 2:
            wire.setdefault(seq, t)
            if count > 1:
                resent[seq] = resent.get(seq, 0) + 1
    ts: dict[int, float] = {}
    sent_ts: dict[int, float] = {}
    for t, ftype, cls, seq, t_hdr in page["rx"]:
        if ftype == 1 and cls == 2 and seq not in ts:
            ts[seq], sent_ts[seq] = t, t_hdr
    rows = []
    for seq, t_rx in sorted(ts.items()):
        t0, t1, t2 = sent_ts.get(seq), handoff.get(seq), wire.get(seq)
        if t0 is None or t1 is None or t2 is None:
            continue
        rows.append(
            {
                "seq": seq,
                "t0": t0,
                "total": (t_rx - t0) * 1000,
                "queue": (t1 - t0) * 1000,
                "sctp": (t2 - t1) * 1000,
                "net": (t_rx - t2) * 1000,
                "resent": resent.get(seq, 0),
            }
        )
    if not rows:
        print("no matched messages", file=sys.stderr)
        return rows
    print(f"matched {len(rows)} MEDIUM frames (page received {len(ts)})")
    for step in ("total", "queue", "sctp", "net"):
        v = [r[step] for r in rows]
        print(
            f"  {step:6s} p50 {pct(v, 50):7.2f}  p90 {pct(v, 90):7.2f}  p99 {pct(v, 99):7.2f}"
            f"  max {max(v):7.2f} ms"
        )
    if data["page_ms"]:
        v = data["page_ms"]
        print(f"  page   p50 {pct(v, 50):7.2f}  p99 {pct(v, 99):7.2f}  max {max(v):7.2f} ms")
    if data["lat_ms"]:
        v = data["lat_ms"]
        print(
            f"  app-measured latency n={len(v)} p50 {pct(v, 50):.2f} p99 {pct(v, 99):.2f}"
            f" max {max(v):.2f} ms"
        )
    counts = {k: len(node[k]) for k in ("sack", "t3", "persist", "flush", "gc", "lag")}
    counts["page long tasks"] = len(page["long"])
    w0, w1 = rows[0]["t0"], rows[-1]["t0"]
    per_peer: dict[str, int] = {}
    for t, _ms, peer in node.get("commit", []):
        if w0 <= t <= w1:
            per_peer[peer] = per_peer.get(peer, 0) + 1
    if per_peer:
        span = max(w1 - w0, 1e-3)
        print(
            f"  store commits (fsync) in the window: {sum(per_peer.values()) / span:.1f}/s for"
            f" {len(rows) / span:.1f} frames/s; by peer key: {per_peer}"
        )
    counts["page stalls"] = len(page["lag"])
    counts["resent"] = sum(1 for r in rows if r["resent"])
    _stalls(node, rows)
    print("  events:", ", ".join(f"{k} {n}" for k, n in counts.items()), *node["info"])
    for r in sorted(rows, key=lambda r: -r["total"])[:worst]:
        print(
            f"  seq {r['seq']:6d} total {r['total']:7.1f} = queue {r['queue']:6.1f}"
            f" + sctp {r['sctp']:6.1f} + net {r['net']:6.1f} ms"
            f"{'  RESENT' if r['resent'] else ''}  {_nearby(r, data)}"
        )
    return rows


def _stalls(node: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """What the node's loop thread was doing while stalled, by innermost p2pmed/aiortc frame."""
    w0, w1 = rows[0]["t0"], rows[-1]["t0"] + 1
    where: dict[str, int] = {}
    samples = [s for s in node.get("stall", []) if w0 <= s[0] <= w1]
    for _t, _ms, frames in samples:
        key = next((f for f in frames if not f.startswith(("threading", "selectors"))), "?")
        where[key] = where.get(key, 0) + 1
    if samples:
        top = sorted(where.items(), key=lambda kv: -kv[1])[:6]
        print(f"  node loop stalled (>= 50 ms) samples: {len(samples)}; innermost frame:")
        for key, n in top:
            print(f"    {n:4d}  {key}")


def _nearby(r: dict[str, Any], data: dict[str, Any]) -> str:
    t0, t1 = r["t0"], r["t0"] + r["total"] / 1000
    node, page = data["node"], data["page"]
    bits = []
    for key in ("persist", "flush", "gc", "lag"):
        hits = [e for e in node[key] if t0 - 0.05 <= e[0] <= t1]
        if hits:
            bits.append(f"node {key} {max(e[1] for e in hits):.0f}ms")
    t3 = [e for e in node["t3"] if t0 <= e[0] <= t1]
    if t3:
        bits.append(f"T3 x{len(t3)} rto {t3[0][1]:.2f}s")
    for key, name in (("long", "long task"), ("lag", "page stall")):
        hits = [e for e in page[key] if t0 - 0.05 <= e[0] <= t1]
        if hits:
            bits.append(f"page {name} {max(e[1] for e in hits):.0f}ms")
    return ", ".join(bits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1.0, help="source speed factor (node --rate)")
    ap.add_argument("--patch", default="", help="experimental aiortc patches (trace_node.py)")
    ap.add_argument(
        "--joins", type=int, default=3, help="page joins, the last one measured (as web_bench)"
    )
    ap.add_argument(
        "--store-dir",
        metavar="DIR",
        help="put the node's --data-dir under DIR (e.g. /dev/shm: fsync costs nothing there)",
    )
    ap.add_argument("--json", metavar="FILE", help="also save the raw traces")
    a = ap.parse_args()
    data = asyncio.run(collect(a.seconds, a.rate, a.patch, a.joins, a.store_dir))
    if a.json:
        Path(a.json).write_text(json.dumps(data))
    rows = analyse(data)
    return 0 if rows else 2


if __name__ == "__main__":
    sys.exit(main())
