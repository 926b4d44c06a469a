"""Fault matrix: a patient node and a clinician node in two network namespaces, the signaling
server in a third, joined through a router namespace where faults are injected.

    sudo .venv/bin/python bench/faults.py --short            # ~30 s per scenario
    sudo .venv/bin/python bench/faults.py --long --json      # 10 min per scenario
    sudo .venv/bin/python bench/faults.py --short --only wifi,rural

One row per scenario, computed from the nodes' `--json` event streams: the patient's `sent`
events (message id, class, CRC-32 of the bytes) and the clinician's `message` events. Sample
content is checked against the deterministic synthetic source (regenerated here from the
patient's stored start time). Pass bar per row: 0 lost, 0 duplicated, 0 reordered,
0 corrupted-but-delivered, no gap in the sample streams. Exit 1 when any row misses it,
2 when the harness itself failed. Progress goes to stderr, the table (or --json) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(BENCH), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fault_scenarios as fs  # noqa: E402
import netlab  # noqa: E402
from fault_metrics import (  # noqa: E402
    ALARM_OPEN,
    Event,
    Row,
    compute_row,
    content_key,
    expected_from_source,
    patient_id_of,
    source_start,
)

PY = str(ROOT / ".venv" / "bin" / "python")
if not os.path.exists(PY):
    PY = sys.executable
PORT = 8443
PROXY_PORT = 8444
TURN_PORT = 3478
FLIP_RATE = 0.05  # fraction of relayed binary WebSocket frames with one bit flipped
KEEP = frozenset(
    ("event", "ts", "id", "cls", "len", "crc", "kind", "signal", "first_seq", "n", "t_us",
     "path", "alarm_id", "state")
)  # fmt: skip


def log(msg: str) -> None:
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 10)}"
    print(f"[faults {stamp}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes


class Proc:
    """One process inside a namespace; stdout JSON lines go to `sink` and to a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, logdir: Path, sink: Any):
        self.name = name
        self.proc = proc
        self.sink = sink
        self.out = open(logdir / f"{name}.jsonl", "w")  # noqa: SIM115 - closed in _read
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                self.out.write(line.decode(errors="replace"))
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and "event" in event:
                    self.sink(event)
        finally:
            self.out.close()

    def send(self, obj: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing() and self.proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.write((json.dumps(obj) + "\n").encode())

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    async def stop(self, grace: float = 8.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
        await self.proc.wait()
        await asyncio.wait([self.reader], timeout=30)  # read to EOF; never cancel it


@dataclass
class Node:
    role: str
    url: str
    data_dir: Path
    events: list[Event] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)

    @property
    def proc(self) -> Proc | None:
        return self.procs[-1] if self.procs else None


# ---------------------------------------------------------------------------------------
# One scenario


class Run:
    def __init__(self, sc: fs.Scenario, args: argparse.Namespace, workdir: Path) -> None:
        self.sc = sc
        self.short = not args.long
        self.duration = args.duration or (25.0 if self.short else 600.0)
        self.rate = args.rate or (1.0 if self.short else 9.0)
        self.horizon = self.duration + 600.0
        self.rng = random.Random(args.seed)
        self.dir = workdir / sc.key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lab = netlab.NetLab(args.lab)
        self.session = f"fault-{sc.key}-{secrets.token_hex(3)}"
        self.turn_secret = secrets.token_hex(16)
        self.marks: list[tuple[float, str, str]] = []
        self.nodes: dict[str, Node] = {}
        self.server: Proc | None = None
        self.helpers: list[Proc] = []
        self.phase_end = 0.0
        self.sent_ids: dict[int, float] = {}
        self.delivered_ids: set[int] = set()
        self.server_starts = 0
        self.turn_counts: list[tuple[str, int, int]] = []
        self.flipstats: dict[str, Any] = {}
        self.warmup_note = ""
        self.pending: set[int] = set()
        self.last_path: dict[str, str | None] = {}
        self.raised: set[Any] = set()
        self.acked: set[Any] = set()

    def rejected_keys(self) -> set[tuple[str, str, str]]:
        return {
            (role, str(e.get("kind")), str(e.get("reason")))
            for role, node in self.nodes.items()
            for e in node.events
            if e["event"] == "rejected"
        }

    # ---- Ctx for the schedules ----
    async def sleep(self, seconds: float) -> bool:
        left = self.phase_end - time.time()
        await asyncio.sleep(max(0.0, min(seconds, left)))
        return time.time() < self.phase_end - 0.05

    def mark(self, kind: str, what: str) -> None:
        self.marks.append((time.time(), kind, what))
        log(f"{self.sc.key}: {kind} {what}")

    async def kill(self, who: str) -> None:
        proc = self.server if who == "server" else self.nodes[who].proc
        if proc is not None:
            proc.kill()
            await proc.proc.wait()

    async def restart(self, who: str) -> None:
        if who == "server":
            await self.start_server()
        else:
            await self.start_node(who)

    # ---- processes ----
    async def spawn(self, host: str, name: str, argv: list[str], sink: Any) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *self.lab.argv(host, argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=open(self.dir / f"{name}.err", "a"),  # noqa: SIM115 - the child owns it
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONUNBUFFERED="1", P2PMED_TURN_SECRET=self.turn_secret),
            limit=1 << 20,
        )
        return Proc(name, proc, self.dir, sink)

    async def start_server(self) -> None:
        self.server_starts += 1
        addr = self.lab.hosts["sig"].addr
        argv = [PY, "-m", "p2pmed", "signaling", "--host", addr, "--port", str(PORT),
                "--data-dir", str(self.dir / "server"), "--log-level", "warning"]  # fmt: skip
        if self.sc.turn:
            argv += ["--turn-urls", f"turn:{addr}:{TURN_PORT}?transport=udp"]
        self.server = await self.spawn("sig", f"server-{self.server_starts}", argv, lambda e: None)
        await self.wait_ready(self.server, addr, PORT)

    async def wait_ready(self, proc: Proc, addr: str, port: int, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.proc.returncode is not None:
                err = (self.dir / f"{proc.name}.err").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}: {err}")
            with contextlib.suppress(TimeoutError):
                await asyncio.to_thread(self.lab.wait_tcp, "pat", addr, port, 1.0)
                return
        raise RuntimeError(f"{proc.name} not listening on {addr}:{port} after {timeout:.0f} s")

    def join_url(self, role: str) -> str:
        from signaling.config import Config
        from signaling.tokens import mint, token_key

        cfg = Config(data_dir=self.dir / "server")
        key = token_key(cfg.data_dir, create=False)
        token, _ = mint(
            key, session=self.session, role=role, ttl=7200.0,
            issuer=cfg.issuer, audience=cfg.audience,
        )  # fmt: skip
        port = PROXY_PORT if self.sc.flip else PORT
        return f"http://{self.lab.hosts['sig'].addr}:{port}/join#token={token}"

    async def start_node(self, role: str) -> None:
        node = self.nodes[role]
        n = len(node.procs) + 1
        argv = [PY, str(BENCH / "fault_scenarios.py"), "node", "--rate", str(self.rate),
                "--horizon", str(self.horizon), "--join", node.url,
                "--data-dir", str(node.data_dir)]  # fmt: skip
        host = "pat" if role == "patient" else "cli"
        node.acked = set()
        node.procs.append(
            await self.spawn(host, f"{role}-{n}", argv, lambda e: self.on_event(role, e))
        )

    def on_event(self, role: str, e: Event) -> None:
        node = self.nodes[role]
        kind = e["event"]
        if kind in ("sent", "message"):  # long runs hold 100,000s of these: keep what counts
            e = {k: v for k, v in e.items() if k in KEEP}
        node.events.append(e)
        if role == "patient" and kind == "sent":
            self.sent_ids.setdefault(e["id"], e["ts"])
        elif role == "clinician" and kind == "message":
            self.delivered_ids.add(e["id"])
            self.pending.discard(e["id"])
        elif kind == "path":
            self.last_path[role] = e.get("active")
        elif role == "patient" and kind == "alarm" and e.get("state") == "ACTIVE":
            self.raised.add(e.get("alarm_id"))
        elif role == "patient" and kind == "alarm-ack":
            self.acked.add(e.get("alarm_id"))
        elif role == "clinician" and kind == "alarm" and e.get("state") in ALARM_OPEN:
            aid = e.get("alarm_id")
            if isinstance(aid, int) and aid not in node.acked and node.proc is not None:
                node.acked.add(aid)  # the clinician acknowledges what it is shown
                node.proc.send({"cmd": "ack", "alarm_id": aid})

    async def wait(self, pred: Any, timeout: float, what: str) -> bool:
        """Poll `pred` 5 times a second. Never per event: the harness must keep reading the
        nodes' stdout, or a node blocks on its own --json writes."""
        deadline = time.time() + timeout
        while not pred():
            if time.time() >= deadline:
                log(f"{self.sc.key}: timed out waiting for {what}")
                return False
            await asyncio.sleep(0.2)
        return True

    def active_path(self, role: str) -> str | None:
        return self.last_path.get(role)

    # ---- the run ----
    async def setup(self) -> None:
        await asyncio.to_thread(self._net_setup)
        addr = self.lab.hosts["sig"].addr
        if self.sc.turn:
            conf = ROOT / "turn" / "test-netns.conf"
            argv = ["turnserver", "-c", str(conf), f"--listening-ip={addr}",
                    f"--relay-ip={addr}", f"--static-auth-secret={self.turn_secret}",
                    "--log-file=stdout", "--simple-log", "--verbose",
                    f"--pidfile={self.dir / 'turnserver.pid'}",
                    f"--userdb={self.dir / 'turndb'}"]  # fmt: skip
            self.helpers.append(await self.spawn("sig", "coturn", argv, lambda e: None))
            await self.wait_ready(self.helpers[-1], addr, TURN_PORT)
        await self.start_server()
        if self.sc.flip:
            argv = [PY, str(BENCH / "flipproxy.py"), "--listen", f"{addr}:{PROXY_PORT}",
                    "--upstream", f"{addr}:{PORT}", "--rate", str(FLIP_RATE),
                    "--skip-envelope"]  # fmt: skip
            self.helpers.append(await self.spawn("sig", "flipproxy", argv, self.flipstats.update))
            await self.wait_ready(self.helpers[-1], addr, PROXY_PORT)
        for role, short in (("clinician", "c"), ("patient", "p")):
            self.nodes[role] = Node(role, self.join_url(role), self.dir / short)
        await self.start_node("clinician")
        await self.start_node("patient")

    def _net_setup(self) -> None:
        self.lab.start()
        for name in ("sig", "pat", "cli"):
            self.lab.add_host(name)
        if self.sc.turn:  # counters show the direct path really runs through coturn
            self.lab.count("pat", "sig", "udp")
            self.lab.count("cli", "sig", "udp")
        self.sc.setup(self.lab)

    async def run(self) -> Row:
        t0 = time.time()
        await self.setup()
        ok = await self.wait(
            lambda: (
                len(self.delivered_ids) >= 5 and self.active_path("patient") == self.sc.expect_path
            ),
            40.0,
            f"stream on the {self.sc.expect_path} path",
        )
        warm = time.time() - t0
        if not ok:  # measured anyway: the row shows what the stream did from here on
            self.warmup_note = (
                f"warm-up: after {warm:.0f} s {len(self.delivered_ids)} messages delivered and "
                f"the active path was {self.active_path('patient')!r}, not "
                f"{self.sc.expect_path!r}; faults started anyway"
            )
            if not self.delivered_ids:
                row = self.row(time.time())
                row.error = self.warmup_note
                return row
        log(f"{self.sc.key}: streaming on {self.active_path('patient')} after {warm:.1f} s; "
            f"faults for {self.duration:.0f} s")  # fmt: skip
        self.phase_end = time.time() + self.duration
        task = asyncio.ensure_future(self.sc.faults(self))
        ticker = asyncio.ensure_future(self.progress())
        try:
            await asyncio.wait_for(task, self.duration + 30.0)
        except TimeoutError:
            log(f"{self.sc.key}: fault schedule overran")
        finally:
            ticker.cancel()
        if self.sc.turn:
            self.turn_counts = await asyncio.to_thread(self.lab.counters)
        await asyncio.to_thread(self.lab.clear_rules)
        cutoff = time.time()
        for role in ("patient", "clinician"):
            node = self.nodes[role]
            if node.proc is not None and node.proc.proc.returncode is not None:
                await self.start_node(role)  # never leave a killed node down
        if self.server is not None and self.server.proc.returncode is not None:
            await self.start_server()
        log(f"{self.sc.key}: faults off; draining")
        drain = 30.0 if self.short else 120.0
        self.pending = {m for m, t in self.sent_ids.items() if t <= cutoff}
        self.pending -= self.delivered_ids
        await self.wait(
            lambda: not self.pending and self.alarms_acked(),
            drain,
            "the backlog and alarm acknowledgements",
        )
        for role in ("patient", "clinician"):  # final event lists before the (slow) row
            for proc in self.nodes[role].procs:
                await proc.stop()
        return await asyncio.to_thread(self.row, cutoff)

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(30.0 if not self.short else 10.0)
            log(f"{self.sc.key}: sent {len(self.sent_ids)}, delivered {len(self.delivered_ids)}")

    def alarms_acked(self) -> bool:
        return self.raised <= self.acked

    def row(self, cutoff: float) -> Row:
        pat, cli = self.nodes.get("patient"), self.nodes.get("clinician")
        p_ev = pat.events if pat else []
        c_ev = cli.events if cli else []
        expected = None
        start = source_start(pat.data_dir, self.session) if pat else None
        keys = {k for e in c_ev if e["event"] == "message" and (k := content_key(e))}
        if start is not None:
            expected = expected_from_source(
                patient_id_of(pat.data_dir), start, self.rate, self.horizon, keys
            )
        row = compute_row(self.sc.title, p_ev, c_ev, cutoff=cutoff, marks=self.marks,
                          expected=expected)  # fmt: skip
        row.load = round(os.getloadavg()[0], 2)
        n_base = len(row.notes)
        if self.warmup_note:
            row.notes.append(self.warmup_note)
        if start is None:
            row.notes.append("source start unknown: content checked against the sent CRCs only")
        if self.sc.turn:
            pkts = [c[1] for c in self.turn_counts]
            row.notes.append(f"UDP packets patient->coturn host {pkts[:1]}, clinician {pkts[1:2]}")
            if len(pkts) != 2 or min(pkts) < row.delivered // 10:
                row.error = "the direct path did not run through coturn"
        if self.flipstats:
            row.notes.append(
                f"flipproxy flipped a bit in {self.flipstats.get('flipped')} of "
                f"{self.flipstats.get('frames')} relayed binary frames"
            )
        reasons = sorted({f"{k[1]}/{k[2]}" for k in self.rejected_keys()})
        if reasons:
            row.notes.append(f"frames rejected by the nodes: {', '.join(reasons)}")
        record = {
            "key": self.sc.key, "title": self.sc.title, "session": self.session,
            "rate": self.rate, "horizon": self.horizon, "cutoff": cutoff, "marks": self.marks,
            "notes": row.notes[n_base:], "error": row.error, "load": row.load,
        }  # fmt: skip
        (self.dir / "run.json").write_text(json.dumps(record))
        return row

    async def teardown(self) -> None:
        for role in ("patient", "clinician"):
            node = self.nodes.get(role)
            if node is not None:
                for p in node.procs:
                    await p.stop()
        for p in [*self.helpers, self.server]:
            if p is not None:
                await p.stop(3.0)
        await asyncio.to_thread(self.lab.cleanup)


async def run_scenario(sc: fs.Scenario, args: argparse.Namespace, workdir: Path) -> Row:
    run = Run(sc, args, workdir)
    budget = run.duration + (150.0 if run.short else 400.0)
    log(f"{sc.key}: start ({sc.title})")
    try:
        row = await asyncio.wait_for(run.run(), budget)
    except TimeoutError:
        row = run.row(time.time())
        row.error = f"scenario exceeded its {budget:.0f} s budget"
    except Exception as exc:  # harness failure: report it in the row, clean up, go on
        row = Row(sc.title, error=f"harness: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(run.teardown())
    verdict = "PASS" if row.passed else "FAIL"
    log(f"{sc.key}: {verdict} sent={row.sent} delivered={row.delivered} lost={row.lost} "
        f"dup={row.duplicated} reord={row.reordered} corrupt={row.corrupted}")  # fmt: skip
    return row


def recompute(scenario_dir: Path) -> Row:
    """The row of a kept run (--keep DIR), from its logs and run.json, with this code."""
    rec = json.loads((scenario_dir / "run.json").read_text())

    def events(role: str) -> list[Event]:
        files = sorted(
            scenario_dir.glob(f"{role}-*.jsonl"), key=lambda f: int(f.stem.rsplit("-", 1)[1])
        )
        out = []
        for f in files:
            for line in f.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    e = json.loads(line)
                    if isinstance(e, dict) and "event" in e:
                        out.append(e)
        return out

    p_ev, c_ev = events("patient"), events("clinician")
    start = source_start(scenario_dir / "p", rec["session"])
    expected = None
    if start is not None:
        keys = {k for e in c_ev if e["event"] == "message" and (k := content_key(e))}
        pid = patient_id_of(scenario_dir / "p")
        expected = expected_from_source(pid, start, rec["rate"], rec["horizon"], keys)
    marks = [tuple(m) for m in rec["marks"]]
    row = compute_row(
        rec["title"], p_ev, c_ev, cutoff=rec["cutoff"], marks=marks, expected=expected
    )
    row.notes += [n for n in rec.get("notes", []) if not n.startswith("source start unknown")]
    if start is None:
        row.notes.append("source start unknown: content checked against the sent CRCs only")
    row.error = rec.get("error")
    row.load = rec.get("load")
    return row


# ---------------------------------------------------------------------------------------
# Output


COLUMNS = (
    ("scenario", "scenario"), ("sent", "sent"), ("delivered", "deliv"), ("lost", "lost"),
    ("duplicated", "dup"), ("reordered", "reord"), ("corrupted", "corrupt"),
    ("sample_gaps", "gaps"), ("alarms", "alarms"), ("alarms_acked", "acked"),
    ("alarm_p50_ms", "al p50"), ("alarm_p99_ms", "al p99"), ("alarm_max_ms", "al max"),
    ("vitals_p99_ms", "vit p99"), ("max_gap_s", "gap s"), ("failover_s", "f-over"),
    ("recover_s", "recov"), ("failback_s", "f-back"), ("paths", "paths"),
    ("rejected", "rej"),
)  # fmt: skip


def table(rows: list[Row]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        return str(v)

    head = [h for _, h in COLUMNS] + ["result"]
    body = [
        [cell(getattr(r, k)) for k, _ in COLUMNS] + ["PASS" if r.passed else "FAIL"] for r in rows
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    for r in rows:
        for note in ([r.error] if r.error else []) + r.notes:
            lines.append(f"- {r.scenario}: {note}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help="about 30 s per scenario (default)")
    mode.add_argument("--long", action="store_true", help="10 minutes per scenario")
    ap.add_argument("--json", action="store_true", help="machine output on stdout")
    ap.add_argument("--only", default="", help="comma-separated scenario keys")
    ap.add_argument("--duration", type=float, help="seconds of faults per scenario (override)")
    ap.add_argument("--rate", type=float, help="source speed factor (default 1 short, 9 long)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the fault schedules")
    ap.add_argument("--keep", metavar="DIR", help="keep logs and stores in DIR")
    ap.add_argument("--recompute", metavar="DIR",
                    help="no run: recompute the rows of a kept run from its logs")  # fmt: skip
    ap.add_argument("--lab", default=netlab.PREFIX, metavar="PREFIX",
                    help="namespace/veth prefix (1..8 letters or digits): labs with different "
                    "prefixes run side by side")  # fmt: skip
    args = ap.parse_args(argv)
    keys = [s.key for s in fs.SCENARIOS]
    args.selected = [k for k in args.only.split(",") if k] or keys
    bad = [k for k in args.selected if k not in keys]
    if bad:
        ap.error(f"unknown scenario(s) {bad}; known: {', '.join(keys)}")
    if args.duration is not None and not 5 <= args.duration <= 3600:
        ap.error("--duration must be 5..3600")
    if args.rate is not None and not 0.1 <= args.rate <= 50:
        ap.error("--rate must be 0.1..50")
    if not (args.lab.isalnum() and len(args.lab) <= 8):
        ap.error("--lab must be 1..8 letters or digits")
    return args


async def amain(args: argparse.Namespace) -> int:
    if args.recompute:
        base = Path(args.recompute)
        rows = [recompute(base / k) for k in args.selected if (base / k / "run.json").exists()]
        if not rows:
            log(f"no run.json under {base}")
            return 2
        print(json.dumps({"rows": [r.as_dict() for r in rows]}, indent=1) if args.json
              else table(rows))  # fmt: skip
        return 0 if all(r.passed for r in rows) else 1
    if os.geteuid() != 0:
        log("needs root (network namespaces, nftables)")
        return 2
    tmp = None
    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="p2pmed-faults-")
        workdir = Path(tmp.name)
    rows: list[Row] = []
    try:
        for key in args.selected:
            sc = next(s for s in fs.SCENARIOS if s.key == key)
            rows.append(await run_scenario(sc, args, workdir))
            with open(workdir / "rows.jsonl", "a") as f:  # partial results survive a crash
                f.write(json.dumps(rows[-1].as_dict()) + "\n")
    finally:
        netlab.NetLab(args.lab).cleanup()
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(
            json.dumps(
                {
                    "mode": "long" if args.long else "short",
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "rows": [r.as_dict() for r in rows],
                },
                indent=1,
            )
        )
    else:
        print(table(rows))
    if any(r.error and r.error.startswith("harness") for r in rows):
        return 2
    return 0 if all(r.passed for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(amain(args))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        return loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        log("interrupted; cleaning up")
        netlab.NetLab(args.lab).cleanup()
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
