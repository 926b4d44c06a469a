"""HL7 v2 device source benchmark (issue #13): a patient node process listening with
--source hl7-mllp:, a clinician node process, a real signaling server on loopback,
and this process as the monitor or unit gateway sending IHE PCD-01 ORU^R01 over MLLP.

    .venv/bin/python bench/device_bench.py            # prints JSON, exits 1 if a bar is missed

Phases:
The patient node, the clinician node and this process (signaling server, sender) are three
processes, as in a deployment.

- throughput: --count ORU^R01 (9 OBX each) back to back on one MLLP connection, each waiting
  for its ACK (as a gateway does): messages/s, and the patient node's CPU per message
  (user + system time of its process, from /proc, over the phase). Bar: >= 200 messages/s,
  every ACK AA, every message's NUMERICS at the clinician.
- latency: --latency-count messages at --latency-rate per second. For each: t_send (before
  the MLLP write), t_read (the patient node read the MLLP frame: stamped in that process by
  bench/device_stages.py, which the nodes run through), t_ack (the ACK read back), t_clin
  (the clinician node has its NUMERICS: its `message` event). p2pmed added = t_clin - t_read,
  the issue's "from the moment ... the MLLP read delivers a value to the moment the clinician
  node has it". Side by side, the device protocol's own latency: the MLLP hop t_read -
  t_send, and the ACK round trip t_ack - t_send the device waits for (which holds the
  patient node's durable commit: AA only once the reading is stored). Bar: added p99 <= 5
  ms. Also reported, not a bar: the same path split where python-hl7 returns its parse tree
  (send -> parsed, parsed -> clinician), where the SDC figure below starts (sdc11073 has
  parsed a report before the consumer callback). With --plain the nodes run as
  `python -m p2pmed node` (no stamps) and added is t_clin - t_send (an upper bound: it
  includes the MLLP hop). Also, per stage, where each message's time went (see
  bench/device_stages.py; --stages DIR keeps its files).

    .venv/bin/python bench/device_bench.py --mode sdc [--seconds 600]

SDC mode: `p2pmed device-sim` (an sdc11073 provider process: numerics every second, ECG II at
500 Hz and pleth at 125 Hz in reports every 50 ms), the patient node in this process with
--source sdc:EPR (SdcSource's tap stamps each reading at the consumer callback, on
sdc11073's thread), the clinician node a process of its own (--json), for --seconds:

- the device protocol's own latency: numerics, provider set (the metric's DeterminationTime,
  whole ms) -> consumer callback; waveforms, a report's last sample -> consumer callback
  (includes the provider's 50 ms batching, the device's design);
- p2pmed added: consumer callback -> the clinician node has the NUMERICS / the waveform chunk
  (its `message` event), p50/p99, side by side with the above. Bar: p99 <= 5 ms;
- samples lost of the ECG + pleth stream: at the device (a report not following on from the
  previous one in time, or a DeviceLost) and on p2pmed's way (a reading the consumer got whose
  samples the clinician never had). Bar: 0.

bench/sdc_bench.py measures the SDC source alone (no node).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]  # noqa: E402

from p2pmed.devices import hl7sim  # noqa: E402
from signaling.testing import running_server  # noqa: E402

BASE_T = 1_800_000_000.0  # OBX-14 times: BASE_T + i ms, so each NUMERICS names its message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3) if v else float("nan")


class Clinician:
    """The clinician node, a process of its own printing --json: the time (its event's `ts`,
    time.time() in that process) each NUMERICS arrived, by the NUMERICS timestamp."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.arrived: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if b'"numerics"' not in line and b'"patient-status"' not in line:
                continue
            e = json.loads(line)
            if e["event"] == "message" and e.get("kind") == "numerics":
                self.arrived[int(e["t_us"])] = float(e["ts"])
            elif e["event"] == "patient-status":
                self.ready.set()


async def wait_for(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = args.port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(tmp) as srv:
            patient = await asyncio.create_subprocess_exec(
                *node_cmd(args, "patient"), "--join",
                srv.join_url(srv.mint("bench", "patient")), "--media", "none",
                "--source", f"hl7-mllp:127.0.0.1:{port}?idle=60",
                "--data-dir", os.path.join(args.store_dir or tmp, f"patient-{port}"),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
                env=node_env(args, "patient", tmp),
            )  # fmt: skip
            clin = Clinician(
                await asyncio.create_subprocess_exec(
                    *node_cmd(args, "clinician"),
                    "--json",
                    "--media",
                    "none",
                    "--join",
                    srv.join_url(srv.mint("bench", "clinician")),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                    cwd=str(ROOT),
                    env=node_env(args, "clinician", tmp),
                )
            )
            try:
                await asyncio.wait_for(clin.ready.wait(), 60)
                for _ in range(200):  # the listener is up once the node runs its source
                    try:
                        reader, writer = await open_hl7_connection("127.0.0.1", port)
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the patient node's MLLP listener never came up")
                res = await phases(args, patient.pid, reader, writer, clin)
            finally:
                for proc in (clin.proc, patient):
                    proc.terminate()
                    await proc.wait()
                clin.task.cancel()
            times = res.pop("times")
            stages = None if args.plain else load_stages(args.stages or tmp)
            res["latency"] = latency(times, stages, args.latency_count)
            if stages is not None:
                res["stages_ms"] = stage_breakdown(times, stages)
            return res


def node_cmd(args: argparse.Namespace, role: str) -> list[str]:
    """`p2pmed node` through bench/device_stages.py, or as it is with --plain."""
    if args.plain:
        return [sys.executable, "-m", "p2pmed", "node"]
    return [sys.executable, str(ROOT / "bench" / "device_stages.py"), "node"]


def node_env(args: argparse.Namespace, role: str, tmp: str) -> dict[str, str] | None:
    if args.plain:
        return None
    out = os.path.join(args.stages or tmp, f"{role}.json")
    return os.environ | {"DEVICE_STAGES_OUT": out}


Stages = tuple[dict[int, list[Any]], dict[int, list[Any]]]  # patient, clinician rows by key
Times = dict[int, tuple[float, float, float]]  # key -> t_send, t_ack, t_clin


def load_stages(where: str) -> Stages:
    def rows(role: str) -> dict[int, list[Any]]:
        doc = json.loads(Path(where, f"{role}.json").read_text())
        return {r[0]: r for r in doc[role]}

    return rows("patient"), rows("clinician")


def latency(times: Times, stages: Stages | None, expected: int) -> dict[str, Any]:
    hop, rtt, e2e, added = [], [], [], []
    parsed_hop, after_parse = [], []  # the split at python-hl7's parse, for comparison only
    for key, (t_send, t_ack, t_clin) in times.items():
        t_read = t_send
        if stages is not None:
            row = stages[0].get(key)
            if row is None or row[1] is None:
                continue
            t_read = row[1]
            hop.append((t_read - t_send) * 1000)
            if row[8] is not None:
                parsed_hop.append((row[8] - t_send) * 1000)
                after_parse.append((t_clin - row[8]) * 1000)
        rtt.append((t_ack - t_send) * 1000)
        e2e.append((t_clin - t_send) * 1000)
        added.append((t_clin - t_read) * 1000)
    return {
        "samples": len(added),
        "expected": expected,
        "added_from": "mllp read (stamped)" if stages is not None else "mllp send (--plain)",
        "mllp_hop_ms_p50": pct(hop, 0.5),
        "mllp_hop_ms_p99": pct(hop, 0.99),
        "mllp_ack_rtt_ms_p50": pct(rtt, 0.5),
        "mllp_ack_rtt_ms_p99": pct(rtt, 0.99),
        "send_to_clinician_ms_p50": pct(e2e, 0.5),
        "send_to_clinician_ms_p99": pct(e2e, 0.99),
        "p2pmed_added_ms_p50": pct(added, 0.5),
        "p2pmed_added_ms_p99": pct(added, 0.99),
        # not the bar: the same path split where python-hl7 hands over its parse tree (where
        # the SDC figure starts: sdc11073 has parsed its report before the consumer callback)
        "send_to_hl7_parsed_ms_p50": pct(parsed_hop, 0.5),
        "send_to_hl7_parsed_ms_p99": pct(parsed_hop, 0.99),
        "added_after_hl7_parse_ms_p50": pct(after_parse, 0.5),
        "added_after_hl7_parse_ms_p99": pct(after_parse, 0.99),
    }


def stage_breakdown(times: Times, stages: Stages) -> dict[str, Any]:
    """Per latency-phase message, the time between stages (ms, p50/p99) from the nodes'
    device_stages.py records."""
    steps: dict[str, list[float]] = {}

    def add(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            steps.setdefault(name, []).append((b - a) * 1000)

    for key, (t_send, _t_ack, t_clin) in times.items():
        p, c = stages[0].get(key), stages[1].get(key)
        if p is None or c is None:
            continue
        _, read, batch, c0, c1, tx, ack, _end, parsed = p
        add("send->read (MLLP hop)", t_send, read)
        add("read->batch (parse, queue hop)", read, batch)
        add("read->parsed (UTF-8, python-hl7 parse)", read, parsed)
        add("parsed->batch (map to readings, queue hop)", parsed, batch)
        add("batch->commit start (map, encode, session)", batch, c0)
        add("commit (SQLite, fsync)", c0, c1)
        add("commit end->first frame to transport", c1, tx)
        add("batch->first frame to transport", batch, tx)
        add("read->HL7 ACK ready", read, ack)
        add("frame to transport->clinician driver (aiortc, UDP, both loops)", tx, c[1])
        add("clinician driver->on_message (session, flush turn)", c[1], c[2])
        add("on_message->message event (decode, --json)", c[2], t_clin)
        add("read->clinician on_message", read, c[2])
    return {k: {"n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99)} for k, v in steps.items()}


def message(i: int) -> tuple[str, int]:
    t = BASE_T + i / 1000
    return hl7sim.oru_r01(f"B{i}", t, patient="PID-7", device="MON-1"), round(t * 1e6)


async def phases(
    args: argparse.Namespace, pid: int, reader: Any, writer: Any, clin: Clinician
) -> dict[str, Any]:
    stats = hl7sim.Stats()
    # throughput: --connections senders, each waiting for its ACKs (MLLP original mode)
    conns = [(reader, writer)]
    for _ in range(args.connections - 1):
        conns.append(await open_hl7_connection("127.0.0.1", args.port))
    keys = [message(i)[1] for i in range(args.count)]

    async def sender(k: int) -> None:
        r, w = conns[k]
        for i in range(k, args.count, len(conns)):
            await hl7sim.send_one(r, w, message(i)[0], stats)

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    clin_cpu0 = cpu_seconds(clin.proc.pid)
    await asyncio.gather(*(sender(k) for k in range(len(conns))))
    elapsed = time.perf_counter() - t0
    for _, w in conns[1:]:
        w.close()
    delivered = await wait_for(lambda: all(k in clin.arrived for k in keys), 60)
    cpu = cpu_seconds(pid) - cpu0
    clin_cpu = cpu_seconds(clin.proc.pid) - clin_cpu0  # its --json output included
    throughput = {
        "connections": args.connections,
        "messages": args.count,
        "messages_per_s": round(args.count / elapsed, 1),
        "acks": dict(stats.acks),
        "all_numerics_at_clinician": delivered,
        "patient_cpu_ms_per_message": round(cpu * 1000 / args.count, 3),
        "patient_cpu_share": round(cpu / elapsed, 2),
        "clinician_cpu_ms_per_message": round(clin_cpu * 1000 / args.count, 3),
    }
    # latency
    times: Times = {}
    base = args.count
    for j in range(args.latency_count):
        text, key = message(base + j)
        t_send = time.time()
        lat = hl7sim.Stats()
        await hl7sim.send_one(reader, writer, text, lat)
        t_ack = time.time()
        if not await wait_for(lambda key=key: key in clin.arrived, 10):
            continue
        times[key] = (t_send, t_ack, clin.arrived[key])
        await asyncio.sleep(max(0.0, 1 / args.latency_rate - (time.time() - t_send)))
    writer.close()
    return {"throughput": throughput, "times": times}


# -- SDC mode --------------------------------------------------------------------------------

ECG, PLETH = 131330, 150452
SIGNAL = {ECG: "II", PLETH: "PLETH"}


class SdcClinician:
    """The clinician node process (--json): when each NUMERICS (by its t_us) and each waveform
    chunk (by signal and first_seq) arrived, as its event's `ts`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.numerics: dict[int, float] = {}
        self.metrics: dict[tuple[int, int], float] = {}  # (MDC code, t_us) -> ts
        self.chunks: dict[tuple[str, int], tuple[int, float]] = {}  # -> (n, ts)
        self.gaps = 0
        self.ready = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            e = json.loads(line)
            name = e["event"]
            if name == "message" and e.get("kind") == "waveform":
                self.chunks[(e["signal"], int(e["first_seq"]))] = (int(e["n"]), float(e["ts"]))
            elif name == "message" and e.get("kind") == "numerics":
                self.numerics.setdefault(int(e["t_us"]), float(e["ts"]))
            elif name == "message" and e.get("kind") == "metric":
                self.metrics.setdefault((int(e["code"]), int(e["t_us"])), float(e["ts"]))
            elif name == "waveform-gap":
                self.gaps += 1
            elif name == "patient-status":
                self.ready.set()


async def run_sdc(args: argparse.Namespace) -> dict[str, Any]:
    from p2pmed.devices.mapping import METRICS
    from p2pmed.devices.reading import DeviceLost, Metric, Reading, Samples
    from p2pmed.node import Node, NodeConfig
    from p2pmed.node.output import Events
    from p2pmed.node.patient import PatientApp
    from p2pmed.vitals.codec import MAX_SAMPLES

    epr = uuid.uuid4().urn
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pmed", "device-sim", "--json", "--epr", epr,
        "--bed", f"bench-{epr[-8:]}", "--cycle", "60",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT),
    )  # fmt: skip
    assert sim.stdout is not None
    if not await asyncio.wait_for(sim.stdout.readline(), 60):
        raise RuntimeError(f"device-sim exited {await sim.wait()}")
    taps: list[tuple[Reading, float]] = []  # appended on sdc11073's thread

    def app(node: Any) -> PatientApp:
        a = PatientApp(node)
        a.device_tap = lambda r, wall: taps.append((r, wall))
        return a

    patient: Any = None
    clin: SdcClinician | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_server(tmp) as srv:
                clin = SdcClinician(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "p2pmed",
                        "node",
                        "--json",
                        "--media",
                        "none",
                        "--join",
                        srv.join_url(srv.mint("bench", "clinician")),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.DEVNULL,
                        cwd=str(ROOT),
                    )
                )
                cfg = NodeConfig.build(
                    srv.join_url(srv.mint("bench", "patient")),
                    data_dir=os.path.join(args.store_dir or tmp, f"patient-{epr[-8:]}"),
                    media="none",
                    source=f"sdc:{epr}",
                )
                patient = Node(cfg, Events(json_out=False), app_factory=app)
                await patient.start()
                await asyncio.wait_for(clin.ready.wait(), 60)
                first = len(clin.chunks)
                if not await wait_for(lambda: len(clin.chunks) > first + 20, 60):
                    raise RuntimeError("no waveform reached the clinician")
                cpu0 = cpu_seconds(os.getpid()), cpu_seconds(clin.proc.pid)
                t0 = time.time()
                await asyncio.sleep(args.seconds)
                t1 = time.time()
                cpu1 = cpu_seconds(os.getpid()), cpu_seconds(clin.proc.pid)
                await asyncio.sleep(2.0)  # what was on its way arrives
                seen = list(taps)
                await patient.close()
                patient = None
    finally:
        if patient is not None:
            await patient.close()
        if clin is not None:
            clin.proc.terminate()
            await clin.proc.wait()
            clin.task.cancel()
        sim.terminate()
        await sim.wait()
    assert clin is not None
    seq = {ECG: 0, PLETH: 0}  # the mapping numbers each signal's samples from 0, as here
    next_us: dict[int, float] = {}
    numerics_wall: dict[int, float] = {}  # NUMERICS t_us -> first consumer callback
    dev_ms: dict[str, list[float]] = {"numerics": [], "waveform": []}
    added: dict[str, list[float]] = {"numerics": [], "metric": [], "waveform": []}
    metrics_missing = 0
    tapped = {ECG: 0, PLETH: 0}
    lost_device = {ECG: 0, PLETH: 0}
    lost_p2pmed = {ECG: 0, PLETH: 0}
    device_lost = 0
    for r, wall in seen:
        inside = t0 <= wall < t1
        if isinstance(r, DeviceLost):
            device_lost += inside
            next_us.clear()
        elif isinstance(r, Metric) and r.time_us is not None:
            if inside:
                dev_ms["numerics"].append((wall - r.time_us / 1e6) * 1000)
                known = METRICS.get(r.code)
                if known is not None and known.param is not None and r.valid:
                    numerics_wall.setdefault(r.time_us, wall)  # goes out in a NUMERICS
                elif (ts := clin.metrics.get((r.code, r.time_us))) is not None:
                    added["metric"].append((ts - wall) * 1000)  # goes out as a METRIC
                else:
                    metrics_missing += 1
        elif isinstance(r, Samples) and r.code in seq and r.values:
            start, n = seq[r.code], len(r.values)
            seq[r.code] += n
            expected = next_us.get(r.code)
            if r.time_us is not None:
                if inside and expected is not None and r.time_us - expected > 1000:
                    lost_device[r.code] += round((r.time_us - expected) * r.rate_hz / 1e6)
                next_us[r.code] = r.time_us + n * 1e6 / r.rate_hz
            if not inside:
                continue
            tapped[r.code] += n
            if r.time_us is not None:
                last = r.time_us / 1e6 + (n - 1) / r.rate_hz
                dev_ms["waveform"].append((wall - last) * 1000)
            signal = SIGNAL[r.code]
            got = [clin.chunks.get((signal, start + a)) for a in range(0, n, MAX_SAMPLES)]
            lost_p2pmed[r.code] += n - sum(c[0] for c in got if c is not None)
            if got[0] is not None:
                added["waveform"].append((got[0][1] - wall) * 1000)
    for t_us, wall in numerics_wall.items():
        # a NUMERICS carries its newest value's time: values measured earlier (NIBP) have
        # no NUMERICS of their own time
        ts = clin.numerics.get(t_us)
        if ts is not None:
            added["numerics"].append((ts - wall) * 1000)
    elapsed = t1 - t0

    def p(values: list[float]) -> dict[str, Any]:
        return {"n": len(values), "p50": pct(values, 0.5), "p99": pct(values, 0.99)}

    return {
        "seconds": round(elapsed, 1),
        "device_protocol_ms": {k: p(v) for k, v in dev_ms.items()},
        "p2pmed_added_ms": {k: p(v) for k, v in added.items()}
        | {"all": p(added["numerics"] + added["metric"] + added["waveform"])},
        "metrics_not_at_clinician": metrics_missing,
        "samples_at_consumer": {"ecg_500hz": tapped[ECG], "pleth_125hz": tapped[PLETH]},
        "samples_expected": {
            "ecg_500hz": round(elapsed * 500),
            "pleth_125hz": round(elapsed * 125),
        },
        "samples_lost_at_device": {
            "ecg_500hz": lost_device[ECG],
            "pleth_125hz": lost_device[PLETH],
        },
        "samples_lost_by_p2pmed": {
            "ecg_500hz": lost_p2pmed[ECG],
            "pleth_125hz": lost_p2pmed[PLETH],
        },
        "clinician_waveform_gaps": clin.gaps,
        "device_lost": device_lost,
        "cpu_percent": {
            "patient_node_and_server": round(100 * (cpu1[0] - cpu0[0]) / elapsed, 1),
            "clinician_node": round(100 * (cpu1[1] - cpu0[1]) / elapsed, 1),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["hl7", "sdc"], default="hl7")
    ap.add_argument("--seconds", type=float, default=60.0, help="sdc: measured run (issue: 600)")
    ap.add_argument("--count", type=int, default=3000, help="throughput phase messages")
    ap.add_argument("--latency-count", type=int, default=500)
    ap.add_argument("--latency-rate", type=float, default=50.0, help="messages/s")
    ap.add_argument(
        "--connections", type=int, default=1, help="MLLP connections sending in parallel"
    )
    ap.add_argument(
        "--store-dir",
        default=None,
        help="where the patient node keeps its durable store (default: a temp dir on disk; "
        "/dev/shm takes the fsync out, as in docs/benchmarks.md)",
    )
    ap.add_argument(
        "--stages",
        metavar="DIR",
        default=None,
        help="hl7: keep bench/device_stages.py's timestamps per stage in DIR",
    )
    ap.add_argument(
        "--plain",
        action="store_true",
        help="hl7: run the nodes as `python -m p2pmed node`, without device_stages.py "
        "(added latency then counted from the MLLP send: an upper bound)",
    )
    args = ap.parse_args()
    if args.mode == "sdc":
        return sdc_main(args)
    res = asyncio.run(run(args))
    res["store"] = args.store_dir or "temp dir on disk"
    t, lat = res["throughput"], res["latency"]
    bars = {
        "hl7_messages_per_s_ge_200": t["messages_per_s"] >= 200
        and t["acks"] == {"AA": t["messages"]}
        and t["all_numerics_at_clinician"],
        "p2pmed_added_p99_le_5ms": lat["p2pmed_added_ms_p99"] <= 5.0
        and lat["samples"] == args.latency_count,
    }
    res["bars"] = bars
    print(json.dumps(res, indent=1))
    return 0 if all(bars.values()) else 1


def sdc_main(args: argparse.Namespace) -> int:
    res = asyncio.run(run_sdc(args))
    res["store"] = args.store_dir or "temp dir on disk"
    lost = sum(res["samples_lost_at_device"].values()) + sum(res["samples_lost_by_p2pmed"].values())
    bars = {
        "p2pmed_added_p99_le_5ms": res["p2pmed_added_ms"]["all"]["p99"] <= 5.0,
        "ecg_pleth_0_samples_lost": lost == 0 and res["device_lost"] == 0,
        "every_metric_at_clinician": res["metrics_not_at_clinician"] == 0,
    }
    res["bars"] = bars
    print(json.dumps(res, indent=1))
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
