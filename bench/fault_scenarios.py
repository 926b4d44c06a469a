"""The patient's scripted vitals for the fault matrix, and the node wrapper that runs them.

`python bench/fault_scenarios.py node --rate R --horizon S -- <p2pmed node args>` runs the
real `p2pmed node` (same code path as `python -m p2pmed node --json`) with two things the
command line does not offer yet: a source speed factor (`NodeConfig.rate`; the long mode
needs >= 100,000 messages in 10 minutes) and the `faults` scenario below, which raises an
alarm every ALARM_EVERY_S wall-clock seconds through the real alarm engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from p2pmed.vitals.codec import Param  # noqa: E402
from p2pmed.vitals.sources import Episode  # noqa: E402

ALARM_EVERY_S = 8.0  # wall-clock seconds between scripted episodes
EPISODE_S = 4.0  # wall-clock length of one episode
FIRST_S = 3.0  # wall-clock time of the first episode after the source starts
# (parameter, target): each crosses one threshold rule of the default alarm engine; four
# parameters in turn put 32 s between two episodes of one rule, above its 30 s cooldown
TARGETS = ((Param.HR, 132.0), (Param.SPO2, 87.0), (Param.SYS, 192.0), (Param.RR, 34.0))


def fault_episodes(rate: float, horizon_s: float) -> list[Episode]:
    """Episodes in source time for a source running `rate` times faster than real time."""
    out = []
    k = 0
    while FIRST_S + k * ALARM_EVERY_S < horizon_s:
        param, target = TARGETS[k % len(TARGETS)]
        start = (FIRST_S + k * ALARM_EVERY_S) * rate
        out.append(Episode(param, start, EPISODE_S * rate, target, ramp_s=0.2 * rate))
        k += 1
    return out


# ---------------------------------------------------------------------------------------
# The scenarios. Each has standing faults applied before the nodes start (`setup`) and a
# schedule run during the measured phase (`faults`), against the runner's Ctx.


class Ctx(Protocol):
    lab: Any  # netlab.NetLab
    short: bool
    duration: float
    rng: random.Random

    async def sleep(self, seconds: float) -> bool: ...  # False once the phase is over
    def mark(self, kind: str, what: str) -> None: ...  # kind: "cut" | "restore"
    async def kill(self, who: str) -> None: ...  # SIGKILL: "server" | "patient" | "clinician"
    async def restart(self, who: str) -> None: ...


async def _steady(ctx: Ctx) -> None:
    await ctx.sleep(ctx.duration)


def _scaled(ctx: Ctx, short: float, long: float) -> float:
    return short if ctx.short else long


async def _wifi_bursts(ctx: Ctx) -> None:
    """Hospital Wi-Fi: the patient's link drops everything for 0.3-1.5 s now and then."""
    while await ctx.sleep(ctx.rng.uniform(*((4.0, 7.0) if ctx.short else (5.0, 15.0)))):
        ctx.lab.burst_on(["pat"], chain="burst")
        ctx.mark("cut", "wifi burst")
        await ctx.sleep(ctx.rng.uniform(0.3, 1.5))
        ctx.lab.burst_off("burst")
        ctx.mark("restore", "wifi burst")


async def _loss_bursts(ctx: Ctx) -> None:
    """5% loss in bursts: 50-250 ms drop-all bursts, exponential gaps (mean 2.85 s)."""
    while await ctx.sleep(ctx.rng.expovariate(1 / 2.85)):
        ctx.lab.burst_on(["pat"], chain="burst")
        await ctx.sleep(ctx.rng.uniform(0.05, 0.25))
        ctx.lab.burst_off("burst")


async def _handovers(ctx: Ctx) -> None:
    """A handover every 30 s (10 s in short mode): the patient's link is down 2-5 s (2-3 s)."""
    period = _scaled(ctx, 10.0, 30.0)
    while await ctx.sleep(period - 3.0):
        ctx.lab.burst_on(["pat"], chain="outage")
        ctx.mark("cut", "handover")
        await ctx.sleep(ctx.rng.uniform(*((2.0, 3.0) if ctx.short else (2.0, 5.0))))
        ctx.lab.burst_off("outage")
        ctx.mark("restore", "handover")
        await ctx.sleep(3.0)


async def _ambulance(ctx: Ctx) -> None:
    await asyncio.gather(_loss_bursts(ctx), _handovers(ctx))


async def _rural(ctx: Ctx) -> None:
    """An outage of every path of the patient: 60 s every 300 s (10 s once, short mode)."""
    first, length, period = (5.0, 10.0, 1e9) if ctx.short else (60.0, 60.0, 300.0)
    if not await ctx.sleep(first):
        return
    while True:
        ctx.lab.burst_on(["pat"], chain="outage")
        ctx.mark("cut", "outage")
        await ctx.sleep(length)
        ctx.lab.burst_off("outage")
        ctx.mark("restore", "outage")
        if not await ctx.sleep(period - length):
            return


def _killer(who: str) -> Callable[[Ctx], Awaitable[None]]:
    async def schedule(ctx: Ctx) -> None:
        """SIGKILL `who` 8 s in (then every 90 s in long mode), restart it 2 s later."""
        first, period = (8.0, 1e9) if ctx.short else (30.0, 90.0)
        if not await ctx.sleep(first):
            return
        while True:
            await ctx.kill(who)
            ctx.mark("cut", f"{who} killed")
            await ctx.sleep(2.0)
            await ctx.restart(who)
            ctx.mark("restore", f"{who} restarted")
            if not await ctx.sleep(period - 2.0):
                return

    return schedule


def _no_setup(lab: Any) -> None:
    return None


def _wifi_setup(lab: Any) -> None:
    lab.loss(None, None, 1.0)


def _ambulance_setup(lab: Any) -> None:
    lab.cap_up("pat", "2mbit")


def _rural_setup(lab: Any) -> None:
    lab.loss("pat", None, 5.0)


def _udp_blocked(lab: Any) -> None:
    lab.block("pat", "cli", "udp")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    setup: Callable[[Any], None] = _no_setup
    faults: Callable[[Ctx], Awaitable[None]] = _steady
    expect_path: str = "direct"  # path the stream settles on before the faults start
    turn: bool = False  # run coturn and give the server TURN URLs
    flip: bool = False  # nodes reach the server through flipproxy
    notes: str = ""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("clean", "1 clean link"),
    Scenario(
        "wifi",
        "2 hospital Wi-Fi",
        _wifi_setup,
        _wifi_bursts,
        notes="1% random loss on every packet, 0.3-1.5 s drop-all bursts on the patient",
    ),
    Scenario(
        "ambulance",
        "3 ambulance",
        _ambulance_setup,
        _ambulance,
        notes="5% bursty loss, 2 Mbit/s upload cap (tbf), handovers; no delay (no netem)",
    ),
    Scenario(
        "rural",
        "4 rural",
        _rural_setup,
        _rural,
        notes="5% loss on the patient link, outage of every path",
    ),
    Scenario("udp-blocked", "5 UDP blocked", _udp_blocked, expect_path="relay"),
    Scenario("turn-only", "6 TURN only", _udp_blocked, turn=True),
    Scenario("server-kill", "7 server SIGKILL", faults=_killer("server")),
    Scenario("patient-kill", "8 patient SIGKILL", faults=_killer("patient")),
    Scenario("clinician-kill", "9 clinician SIGKILL", faults=_killer("clinician")),
    Scenario(
        "bitflip",
        "10 corrupted frames",
        _udp_blocked,
        expect_path="relay",
        flip=True,
        notes="UDP blocked so every frame crosses flipproxy; 5% of binary frames flipped",
    ),
)


def run_node(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fault_scenarios.py node")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--horizon", type=float, default=3600.0, help="wall seconds of episodes")
    ap.add_argument("--join", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    if not 0.1 <= args.rate <= 50:
        ap.error("--rate must be 0.1..50")

    import p2pmed.node.patient as patient
    from p2pmed import node_cli
    from p2pmed.node.config import ConfigError, NodeConfig

    scripted = fault_episodes(args.rate, args.horizon)
    builtin = patient.episodes
    patient.episodes = lambda name: scripted if name == "faults" else builtin(name)
    node_cli._setup_logging(args.log_level)
    try:
        config = NodeConfig.build(
            args.join,
            data_dir=args.data_dir,
            media="none",
            json_out=True,
            ui=False,
            auto_admit=True,
            scenario="faults",
            rate=args.rate,
        )
    except ConfigError as exc:
        print(f"fault node: {exc}", file=sys.stderr)
        return 2
    return node_cli._run(node_cli._node_main(config))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        sys.exit(run_node(sys.argv[2:]))
    print("usage: fault_scenarios.py node --rate R --join URL --data-dir DIR", file=sys.stderr)
    sys.exit(2)
