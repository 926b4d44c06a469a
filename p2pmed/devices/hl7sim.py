"""`p2pmed hl7-sim HOST:PORT`: a simulated bedside monitor that sends IHE PCD-01 vitals
(ORU^R01) at a rate and IHE PCD-04 alerts (ORU^R40) over MLLP, and waits for each ACK.

Usable against any HL7 v2 receiver (a p2pmed patient node with --source hl7-mllp:, an
interface engine). It reconnects when the connection drops. At the end (--count, --duration
or Ctrl-C) it prints one JSON line: messages sent, ACK codes, ACK round trip p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]

VITALS: tuple[tuple[int, str, str, str], ...] = (
    # MDC code, reference id, unit code, unit reference id
    (147842, "MDC_ECG_HEART_RATE", "264864", "MDC_DIM_BEAT_PER_MIN"),
    (150456, "MDC_PULS_OXIM_SAT_O2", "262688", "MDC_DIM_PERCENT"),
    (149530, "MDC_PULS_OXIM_PULS_RATE", "264864", "MDC_DIM_BEAT_PER_MIN"),
    (150301, "MDC_PRESS_BLD_NONINV_SYS", "266016", "MDC_DIM_MMHG"),
    (150302, "MDC_PRESS_BLD_NONINV_DIA", "266016", "MDC_DIM_MMHG"),
    (150303, "MDC_PRESS_BLD_NONINV_MEAN", "266016", "MDC_DIM_MMHG"),
    (150364, "MDC_TEMP_BODY", "268192", "MDC_DIM_DEGC"),
    (151562, "MDC_RESP_RATE", "264928", "MDC_DIM_RESP_PER_MIN"),
)
SPO2_LOW_EVENT = (196674, "MDC_EVT_LO")
PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"  # MSH-21
MONITORING = (
    "182777000^monitoring of patient^SCT"  # OBR-4  # the simulated alert: SpO2 below its limit
)


def hl7_time(t: float) -> str:
    dt = datetime.fromtimestamp(t, UTC)
    return dt.strftime("%Y%m%d%H%M%S.") + f"{dt.microsecond // 1000:03d}+0000"


def values_at(t: float) -> dict[int, float]:
    """The simulated patient at t seconds: slow drifts around normal values."""
    hr = 72 + 6 * math.sin(t / 30)
    sys_, dia = 120 + 5 * math.sin(t / 90), 80 + 3 * math.sin(t / 90)
    return {
        147842: round(hr),
        150456: round(97 + math.sin(t / 45), 1),
        149530: round(hr + 1),
        150301: round(sys_),
        150302: round(dia),
        150303: round((sys_ + 2 * dia) / 3),
        150364: round(36.8 + 0.2 * math.sin(t / 300), 1),
        151562: round(14 + 2 * math.sin(t / 20)),
    }


def _msh(kind: str, control: str, t: float, device: str) -> str:
    return (
        f"MSH|^~\\&|{device}^0012345678ABCDEF^EUI-64|P2PMED-SIM|||{hl7_time(t)}||"
        f"{kind}|{control}|P|2.6|||AL|NE||UNICODE UTF-8|||{PCD01_PROFILE}"
    )


def oru_r01(control: str, t: float, *, patient: str, device: str) -> str:
    """One PCD-01 message with the monitor's current numerics (MDS row with the equipment id)."""
    equipment = f"{device}^^0012345678ABCDEF^EUI-64"
    ts = hl7_time(t)
    segs = [
        _msh("ORU^R01^ORU_R01", control, t, device),
        f"PID|||{patient}^^^Hospital^MR||Doe^John",
        f"OBR|1|{control}^P2PMED-SIM|{control}^P2PMED-SIM|{MONITORING}|||{ts}",
        f"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||{equipment}",
    ]
    for i, (code, ref, ucode, uref) in enumerate(VITALS, start=2):
        value = values_at(t)[code]
        segs.append(
            f"OBX|{i}|NM|{code}^{ref}^MDC|1.1.1.{i - 1}|{value:g}|{ucode}^{uref}^MDC|||||R|||{ts}"
            f"||||{equipment}"
        )
    return "\r".join(segs)


def oru_r40(
    control: str,
    t: float,
    *,
    patient: str,
    device: str,
    alert_id: str,
    active: bool,
    priority: str = "PM",
) -> str:
    """One PCD-04 alert: facet 1 the event with priority/source in OBX-8, then the source
    metric, the event phase and the alarm state."""
    ts = hl7_time(t)
    code, ref = SPO2_LOW_EVENT
    phase, state = ("start", "active") if active else ("end", "inactive")
    spo2 = values_at(t)[150456]
    segs = [
        _msh("ORU^R40^ORU_R40", control, t, device),
        f"PID|||{patient}^^^Hospital^MR||Doe^John",
        f"OBR|1|{alert_id}^P2PMED-SIM|{alert_id}^P2PMED-SIM|196616^MDC_EVT_ALARM^MDC|||{ts}",
        f"OBX|1|ST|{code}^{ref}^MDC|1.1.1.150456.1|SpO2 low|||L~{priority}~SP|||F|||{ts}",
        f"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.150456.2|{spo2:g}|262688^MDC_DIM_PERCENT^MDC|||||F",
        f"OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.1.1.150456.3|{phase}||||||F",
        f"OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.1.1.150456.4|{state}||||||F",
    ]
    return "\r".join(segs)


@dataclass
class Stats:
    sent: int = 0
    acks: Counter[str] = field(default_factory=Counter)
    rtt_ms: list[float] = field(default_factory=list)
    reconnects: int = 0

    def summary(self) -> dict[str, object]:
        r = sorted(self.rtt_ms)

        def pct(q: float) -> float | None:
            return round(r[min(len(r) - 1, int(q * len(r)))], 3) if r else None

        return {
            "event": "hl7-sim-done",
            "sent": self.sent,
            "acks": dict(self.acks),
            "ack_rtt_ms_p50": pct(0.5),
            "ack_rtt_ms_p99": pct(0.99),
            "reconnects": self.reconnects,
        }


async def send_one(reader: object, writer: object, text: str, stats: Stats) -> str:
    t0 = time.perf_counter()
    writer.writeblock(text.encode("utf-8"))  # type: ignore[attr-defined]
    await writer.drain()  # type: ignore[attr-defined]
    ack = await reader.readmessage()  # type: ignore[attr-defined]
    stats.rtt_ms.append((time.perf_counter() - t0) * 1000)
    stats.sent += 1
    code = str(ack.segment("MSA")(1))
    stats.acks[code] += 1
    return code


async def run(
    host: str,
    port: int,
    *,
    rate: float = 1.0,
    count: int | None = None,
    duration: float | None = None,
    alarm_every: float = 20.0,
    patient: str = "PID-7",
    device: str = "MON-1",
    stats: Stats | None = None,
) -> Stats:
    """Send until `count` messages or `duration` seconds; vitals at `rate` per second and an
    SpO2-low alert raised every `alarm_every` seconds (0: none), ended half way to the next."""
    stats = stats or Stats()
    start = time.time()
    n = 0
    alert = 0
    alert_active = False
    conn: tuple[object, object] | None = None
    while count is None or n < count:
        now = time.time()
        if duration is not None and now - start >= duration:
            break
        try:
            if conn is None:
                conn = await open_hl7_connection(host, port, encoding="utf-8")
            reader, writer = conn
            n += 1
            await send_one(
                reader, writer, oru_r01(f"S{n}", now, patient=patient, device=device), stats
            )
            if alarm_every > 0:
                want = int((now - start) / (alarm_every / 2)) % 2 == 1
                if want != alert_active:
                    if want:
                        alert += 1
                    alert_active = want
                    n += 1
                    msg = oru_r40(
                        f"S{n}", now, patient=patient, device=device,
                        alert_id=f"A{alert}", active=want,
                    )  # fmt: skip
                    await send_one(reader, writer, msg, stats)
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            if conn is not None:
                conn[1].close()  # type: ignore[attr-defined]
            conn = None
            stats.reconnects += 1
            await asyncio.sleep(1.0)
            continue
        if rate > 0:
            await asyncio.sleep(max(0.0, start + n / rate - time.time()))
    if conn is not None:
        conn[1].close()  # type: ignore[attr-defined]
    return stats


def parse_target(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "hl7-sim",
        help="simulated monitor: IHE PCD-01 vitals and PCD-04 alerts over HL7 v2 MLLP",
        description=__doc__,
    )
    p.add_argument("target", type=parse_target, metavar="HOST:PORT")
    p.add_argument("--rate", type=float, default=1.0, help="ORU^R01 per second (default 1)")
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument(
        "--alarm-every", type=float, default=20.0, help="SpO2-low alert period, s (0: none)"
    )
    p.add_argument("--patient", default="PID-7", help="PID-3 patient id (default PID-7)")
    p.add_argument("--device", default="MON-1", help="equipment id (default MON-1)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    host, port = args.target
    stats = Stats()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run(
                host,
                port,
                rate=args.rate,
                count=args.count,
                duration=args.duration,
                alarm_every=args.alarm_every,
                patient=args.patient,
                device=args.device,
                stats=stats,
            )
        )
    print(json.dumps(stats.summary()), flush=True)
    return 0 if stats.sent and set(stats.acks) <= {"AA"} else 1
