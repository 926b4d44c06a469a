"""Signaling server benchmark (loopback only, bounded in count and time).

Runs the p2pmed signaling server and, side by side, a bare aiohttp forwarder (receive from
one socket, send to the other) in child processes; the clients run in this process.

Figures: idle endpoints held and memory per endpoint, join latency in a storm of joins,
relay throughput and p99 latency of 256-byte frames between session pairs, and the ratio
of relay throughput to the bare forwarder. Exits 1 when a bar is missed:
  idle endpoints held >= 5000, join p99 <= 50 ms, relay >= 0.8 x bare forwarder.

    .venv/bin/python bench/signaling_bench.py [--idle 5000] [--storm 500] [--pairs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BAR_IDLE = 5000
BAR_JOIN_P99 = 0.050
BAR_RATIO = 0.8
DEADLINE = 300.0  # the whole run, seconds
FRAME = 256
WINDOW = 32  # frames in flight per pair


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# ---------------------------------------------------------------- server processes
def serve_p2pmed(port: int, data_dir: str) -> None:
    from aiohttp import web

    from signaling.config import Config, Limits
    from signaling.server import create_app

    limits = Limits(
        relay_rate=1e9,
        relay_burst=1e9,
        msg_rate=1e6,
        msg_burst=1e6,
        join_rate=1e6,
        join_burst=1e6,
        max_sessions=100_000,
        max_endpoints_per_session=8,
        pending_per_ip=100_000,
        join_timeout=60,
    )
    config = Config(data_dir=Path(data_dir), host="127.0.0.1", port=port, limits=limits)
    web.run_app(
        create_app(config),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=lambda *_: print("READY", flush=True),
        backlog=4096,
    )


def serve_bare(port: int) -> None:
    """Receives from one socket and sends to the other: the floor any relay pays."""
    from aiohttp import WSMsgType, web

    peers: dict[str, web.WebSocketResponse] = {}

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(max_msg_size=1 << 16)
        await sock.prepare(request)
        me = request.query["me"]
        other = request.query["peer"]
        peers[me] = sock
        try:
            async for msg in sock:
                if msg.type == WSMsgType.BINARY:
                    dst = peers.get(other)
                    if dst is not None:
                        await dst.send_bytes(msg.data)
        finally:
            peers.pop(me, None)
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=lambda *_: print("READY", flush=True),
        backlog=4096,
    )


async def start_child(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if b"READY" not in line:
        raise RuntimeError(f"child {args} did not start")
    return proc


async def stop_child(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---------------------------------------------------------------- clients
class Minter:
    def __init__(self, data_dir: Path) -> None:
        from signaling.config import Config
        from signaling.tokens import token_key

        self.cfg = Config(data_dir=data_dir)
        self.key = token_key(data_dir, create=False)

    def __call__(self, session: str, role: str) -> str:
        from signaling.tokens import mint

        return mint(
            self.key,
            session=session,
            role=role,
            ttl=3600,
            issuer=self.cfg.issuer,
            audience=self.cfg.audience,
        )[0]


async def join(
    http: aiohttp.ClientSession, url: str, token: str, eid: str
) -> tuple[aiohttp.ClientWebSocketResponse, float]:
    ws = await http.ws_connect(url, max_msg_size=1 << 16)
    t0 = time.perf_counter()
    await ws.send_str(json.dumps({"type": "join", "token": token, "endpoint_id": eid}))
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"join {eid}: {msg.type} {ws.close_code}")
        if json.loads(msg.data)["type"] == "joined":
            return ws, time.perf_counter() - t0


async def bench_idle(
    http: aiohttp.ClientSession, url: str, mint: Minter, n: int, pid: int, http_url: str
) -> dict[str, float]:
    per_session = 4
    tokens = [
        (mint(f"idle{i // per_session}", "clinician"), f"c{i % per_session}") for i in range(n)
    ]
    rss0 = rss_kib(pid)
    socks: list[aiohttp.ClientWebSocketResponse] = []
    sem = asyncio.Semaphore(100)

    async def one(tok: str, eid: str) -> None:
        async with sem:
            ws, _ = await join(http, url, tok, eid)
            socks.append(ws)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(t, e) for t, e in tokens), return_exceptions=True)
    setup = time.perf_counter() - t0
    failed = sum(1 for r in results if isinstance(r, BaseException))
    await asyncio.sleep(2.0)  # held, idle
    async with http.get(http_url + "/healthz") as r:
        health = await r.json()
    rss1 = rss_kib(pid)
    open_now = sum(1 for s in socks if not s.closed)
    held = min(open_now, health["endpoints"])
    for s in socks:
        await s.close()
    return {
        "idle_held": held,
        "idle_failed": failed,
        "idle_setup_s": setup,
        "kib_per_endpoint": (rss1 - rss0) / max(1, len(socks)),
    }


async def storm_round(
    http: aiohttp.ClientSession, url: str, mint: Minter, n: int, window: float, tag: str
) -> list[float]:
    """n open sockets send "join" spread evenly over `window` seconds (0 = all at once)."""
    tokens = [mint(f"{tag}{i // 2}", "clinician") for i in range(n)]
    sem = asyncio.Semaphore(50)

    async def connect() -> aiohttp.ClientWebSocketResponse:
        async with sem:
            return await http.ws_connect(url)

    socks = await asyncio.gather(*(connect() for _ in range(n)))
    lat: list[float] = []
    start = time.perf_counter() + 0.05

    async def fire(i: int, ws: aiohttp.ClientWebSocketResponse, tok: str) -> None:
        delay = start + window * i / n - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        await ws.send_str(json.dumps({"type": "join", "token": tok, "endpoint_id": f"c{i % 2}"}))
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"storm join failed: {msg.type}")
            if json.loads(msg.data)["type"] == "joined":
                lat.append(time.perf_counter() - t0)
                return

    await asyncio.gather(
        *(fire(i, ws, t) for i, (ws, t) in enumerate(zip(socks, tokens, strict=True)))
    )
    for ws in socks:
        await ws.close()
    return lat


async def bench_storm(
    http: aiohttp.ClientSession, url: str, mint: Minter, n: int, window: float
) -> dict[str, float]:
    """The bar: n joins within `window` s (a reconnect storm after a restart, which the
    server spreads with jittered "after_ms"). Informational: all n in one burst."""
    lat = await storm_round(http, url, mint, n, window, "storm")
    await asyncio.sleep(0.5)
    burst = await storm_round(http, url, mint, n, 0.0, "burst")
    return {
        "join_p50_ms": pct(lat, 50) * 1e3,
        "join_p99_ms": pct(lat, 99) * 1e3,
        "joins": len(lat),
        "burst_p50_ms": pct(burst, 50) * 1e3,
        "burst_p99_ms": pct(burst, 99) * 1e3,
    }


async def run_pairs(
    pairs: list[tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, bytes]],
    frames: int,
    rate: float = 0.0,
) -> tuple[float, float]:
    """Each pair: a sends `frames` 256-byte frames to b with at most WINDOW in flight,
    flat out, or at `rate` frames/s per pair (latency below saturation)."""
    lat: list[float] = []

    async def pair(
        a: aiohttp.ClientWebSocketResponse, b: aiohttp.ClientWebSocketResponse, prefix: bytes
    ) -> None:
        window = asyncio.Semaphore(WINDOW)
        pad = b"\0" * (FRAME - 12)

        async def recv() -> None:
            for _ in range(frames):
                msg = await b.receive(timeout=30)
                while msg.type == aiohttp.WSMsgType.TEXT:
                    msg = await b.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"relay receive: {msg.type}")
                data = msg.data
                _, sent = struct.unpack_from(">IQ", data, len(data) - FRAME)
                lat.append(time.monotonic_ns() - sent)
                window.release()

        r = asyncio.ensure_future(recv())
        t_start = time.perf_counter()
        for i in range(frames):
            if rate:
                delay = t_start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            await a.send_bytes(prefix + struct.pack(">IQ", i, time.monotonic_ns()) + pad)
        await asyncio.wait_for(r, 60)

    t0 = time.perf_counter()
    await asyncio.gather(*(pair(a, b, p) for a, b, p in pairs))
    dt = time.perf_counter() - t0
    return len(pairs) * frames / dt, pct(lat, 99) / 1e9


async def p2pmed_pairs(
    http: aiohttp.ClientSession, url: str, mint: Minter, n: int, rnd: int
) -> list[tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, bytes]]:
    out = []
    for i in range(n):
        s = f"relay{rnd}x{i}"
        pat, _ = await join(http, url, mint(s, "patient"), "pat")
        doc, _ = await join(http, url, mint(s, "clinician"), "doc")
        await doc.send_str(json.dumps({"type": "admit", "endpoint_id": "pat"}))
        out.append((pat, doc, b"\x03doc"))
    await asyncio.sleep(0.2)  # admission events are read (and skipped) by the receivers
    return out


async def bare_pairs(
    http: aiohttp.ClientSession, url: str, n: int
) -> list[tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, bytes]]:
    out = []
    for i in range(n):
        a = await http.ws_connect(f"{url}?me=a{i}&peer=b{i}", max_msg_size=1 << 16)
        b = await http.ws_connect(f"{url}?me=b{i}&peer=a{i}", max_msg_size=1 << 16)
        out.append((a, b, b"\x03doc"))  # same envelope bytes as the real relay
    return out


async def close_pairs(
    pairs: list[tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse, bytes]],
) -> None:
    for a, b, _ in pairs:
        await a.close()
        await b.close()


async def main(args: argparse.Namespace) -> int:
    raise_nofile()
    start = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="p2pmed-bench-"))
    from signaling.tokens import token_key

    token_key(data, create=True)
    mint = Minter(data)
    port, bare_port = free_port(), free_port()
    server = await start_child("--serve", "p2pmed", "--port", str(port), "--data-dir", str(data))
    bare = await start_child("--serve", "bare", "--port", str(bare_port))
    http_url, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    bare_url = f"ws://127.0.0.1:{bare_port}/ws"
    res: dict[str, float] = {}
    conn = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=conn) as http:
            assert server.pid is not None
            res.update(
                await asyncio.wait_for(
                    bench_idle(http, url, mint, args.idle, server.pid, http_url), 150
                )
            )
            print(
                f"idle: {res['idle_held']:.0f} endpoints held ({res['idle_failed']:.0f} failed),"
                f" set up in {res['idle_setup_s']:.1f} s,"
                f" {res['kib_per_endpoint']:.1f} KiB server RSS per endpoint",
                flush=True,
            )
            await asyncio.sleep(1.0)
            res.update(
                await asyncio.wait_for(
                    bench_storm(http, url, mint, args.storm, args.storm_window), 90
                )
            )
            print(
                f"join storm: {res['joins']:.0f} joins in {args.storm_window:g} s: p50"
                f" {res['join_p50_ms']:.1f} ms, p99 {res['join_p99_ms']:.1f} ms;"
                f" all {args.storm} in one burst: p50 {res['burst_p50_ms']:.1f} ms,"
                f" p99 {res['burst_p99_ms']:.1f} ms (informational)",
                flush=True,
            )
            ours, theirs, ours_p99, theirs_p99 = [], [], [], []
            ours_cpu, theirs_cpu = [], []
            for rnd in range(args.rounds):  # alternate, so drift hits both alike
                if time.monotonic() - start > DEADLINE - 90:
                    break
                bp = await bare_pairs(http, bare_url, args.pairs)
                c0 = cpu_s(bare.pid)
                rate, p99 = await asyncio.wait_for(run_pairs(bp, args.frames), 60)
                theirs_cpu.append(cpu_s(bare.pid) - c0)
                await close_pairs(bp)
                theirs.append(rate)
                theirs_p99.append(p99)
                pp = await p2pmed_pairs(http, url, mint, args.pairs, rnd)
                c0 = cpu_s(server.pid)
                rate, p99 = await asyncio.wait_for(run_pairs(pp, args.frames), 60)
                ours_cpu.append(cpu_s(server.pid) - c0)
                await close_pairs(pp)
                ours.append(rate)
                ours_p99.append(p99)
                print(
                    f"relay round {rnd + 1} (flat out): p2pmed {ours[-1]:,.0f} frames/s,"
                    f" bare {theirs[-1]:,.0f} frames/s; server CPU per frame"
                    f" {ours_cpu[-1] / (args.pairs * args.frames) * 1e6:.1f} us vs"
                    f" {theirs_cpu[-1] / (args.pairs * args.frames) * 1e6:.1f} us",
                    flush=True,
                )
            # latency below saturation: every pair sends at a fixed rate
            n_paced = max(1, int(args.paced_rate * 2))
            bp = await bare_pairs(http, bare_url, args.pairs)
            _, bare_paced = await asyncio.wait_for(run_pairs(bp, n_paced, args.paced_rate), 60)
            await close_pairs(bp)
            pp = await p2pmed_pairs(http, url, mint, args.pairs, 99)
            _, our_paced = await asyncio.wait_for(run_pairs(pp, n_paced, args.paced_rate), 60)
            await close_pairs(pp)
            res["relay_fps"] = statistics.median(ours)
            res["bare_fps"] = statistics.median(theirs)
            res["relay_sat_p99_ms"] = statistics.median(ours_p99) * 1e3
            res["bare_sat_p99_ms"] = statistics.median(theirs_p99) * 1e3
            res["relay_p99_ms"] = our_paced * 1e3
            res["bare_p99_ms"] = bare_paced * 1e3
            res["ratio"] = res["relay_fps"] / res["bare_fps"]
            res["cpu_us_per_frame"] = statistics.median(ours_cpu) / (args.pairs * args.frames) * 1e6
            res["bare_cpu_us_per_frame"] = (
                statistics.median(theirs_cpu) / (args.pairs * args.frames) * 1e6
            )
    finally:
        await stop_child(server)
        await stop_child(bare)
    print(
        f"relay ({args.pairs} pairs, {FRAME} B frames): flat out (window {WINDOW}/pair)"
        f" p2pmed {res['relay_fps']:,.0f} frames/s vs bare forwarder {res['bare_fps']:,.0f}"
        f" frames/s, ratio {res['ratio']:.2f} (median of {args.rounds} alternating rounds);"
        f" p99 latency at saturation {res['relay_sat_p99_ms']:.1f} ms vs"
        f" {res['bare_sat_p99_ms']:.1f} ms; p99 latency at {args.paced_rate:g} frames/s per"
        f" pair {res['relay_p99_ms']:.2f} ms vs {res['bare_p99_ms']:.2f} ms;"
        f" server CPU per frame {res['cpu_us_per_frame']:.1f} us vs"
        f" {res['bare_cpu_us_per_frame']:.1f} us"
    )
    verdicts = [
        ("idle endpoints held", res["idle_held"] >= BAR_IDLE, f">= {BAR_IDLE}"),
        ("join p99", res["join_p99_ms"] <= BAR_JOIN_P99 * 1e3, f"<= {BAR_JOIN_P99 * 1e3:.0f} ms"),
        ("relay / bare forwarder", res["ratio"] >= BAR_RATIO, f">= {BAR_RATIO}"),
    ]
    for name, ok, bar in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {name} (bar {bar})")
    print(json.dumps({k: round(v, 3) for k, v in res.items()}))
    return 0 if all(ok for _, ok, _ in verdicts) else 1


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--idle", type=int, default=5000, help="idle endpoints to hold")
    p.add_argument("--storm", type=int, default=500, help="joins in the storm")
    p.add_argument(
        "--storm-window",
        type=float,
        default=1.0,
        help="seconds over which the storm's joins are sent",
    )
    p.add_argument("--pairs", type=int, default=100, help="relay session pairs")
    p.add_argument("--frames", type=int, default=1000, help="frames per pair per round")
    p.add_argument(
        "--paced-rate",
        type=float,
        default=20.0,
        help="frames/s per pair for the latency measurement",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating relay rounds")
    p.add_argument("--serve", choices=["p2pmed", "bare"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    for name in ("idle", "storm", "pairs", "frames", "rounds"):
        if not 1 <= getattr(args, name) <= 20_000:
            p.error(f"--{name} must be 1..20000")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.serve:
        raise_nofile()
        if args.serve == "p2pmed" and os.environ.get("P2PMED_BENCH_PROFILE"):
            import cProfile

            cProfile.runctx(
                "serve_p2pmed(args.port, args.data_dir)",
                globals(),
                locals(),
                os.environ["P2PMED_BENCH_PROFILE"],
            )
        elif args.serve == "p2pmed":
            serve_p2pmed(args.port, args.data_dir)
        elif os.environ.get("P2PMED_BENCH_PROFILE_BARE"):
            import cProfile

            cProfile.runctx(
                "serve_bare(args.port)",
                globals(),
                locals(),
                os.environ["P2PMED_BENCH_PROFILE_BARE"],
            )
        else:
            serve_bare(args.port)
        return 0
    return asyncio.run(main(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(cli())
