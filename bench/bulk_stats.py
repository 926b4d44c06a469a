"""Figures of bench/node_bench.py's bulk phase: per-pair ratios, their spread, process CPU.

Kept apart from the bench so that they can be tested without starting any process.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads), from
    /proc/PID/stat. Resolution one clock tick (10 ms)."""
    with open(f"/proc/{pid}/stat") as f:
        return stat_cpu_s(f.read())


def stat_cpu_s(stat: str) -> float:
    """utime + stime of a /proc/PID/stat line, in seconds."""
    # the command name (field 2) is in parentheses and may hold spaces and ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICK


def machine_busy_s(stat: str | None = None) -> float:
    """CPU seconds all CPUs spent in user, nice, system and steal so far (/proc/stat): work of
    any process, plus time the hypervisor took away. Interrupt time is left out (here mostly
    the benchmark's own loopback packets)."""
    if stat is None:
        with open("/proc/stat") as f:
            stat = f.readline()
    fields = stat.split()
    if not fields or fields[0] != "cpu":
        raise ValueError("first line of /proc/stat is not the cpu total")
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[1:9])
    return (user + nice + system + steal) / _TICK


def clean_pairs(foreign: list[tuple[float, float]], limit: float) -> list[bool]:
    """Per pair of transfers, whether neither ran beside more than `limit` cores of work
    that was not the benchmark's (another process, the hypervisor)."""
    return [a <= limit and b <= limit for a, b in foreign]


def udp_counters(snmp: str | None = None) -> tuple[int, int]:
    """(datagrams sent, datagrams dropped because a receive buffer was full) by this network
    namespace so far, from /proc/net/snmp (or the text given)."""
    if snmp is None:
        with open("/proc/net/snmp") as f:
            snmp = f.read()
    rows = [line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        raise ValueError("no Udp: lines in /proc/net/snmp")
    row = dict(zip(rows[0], map(int, rows[1]), strict=True))
    return row["OutDatagrams"], row["RcvbufErrors"]


def mb_per_s(arrivals: list[tuple[int, float]], starts: list[float]) -> list[float]:
    """MB/s of each transfer: bytes / (its last byte's arrival - its start)."""
    if len(arrivals) != len(starts):
        raise ValueError(f"{len(arrivals)} transfers arrived, {len(starts)} started")
    return [
        n / (last - t0) / 1e6 if last > t0 else 0.0
        for (n, last), t0 in zip(arrivals, starts, strict=True)
    ]


@dataclass(frozen=True)
class Spread:
    """Median of some ratios and how far the others lie from it."""

    values: tuple[float, ...]
    median: float
    low: float
    high: float

    @property
    def deviation(self) -> float:
        """Largest relative distance of a value from the median (0.03 is +-3 %)."""
        if not self.values or self.median == 0:
            return float("nan")
        return max(abs(v - self.median) / self.median for v in self.values)

    def text(self) -> str:
        if not self.values:
            return "no values"
        return (
            f"median {self.median:.3f}, range {self.low:.3f}-{self.high:.3f}"
            f" (+-{self.deviation:.1%} around the median, n={len(self.values)})"
        )


def spread(values: list[float]) -> Spread:
    if not values:
        return Spread((), float("nan"), float("nan"), float("nan"))
    return Spread(tuple(values), statistics.median(values), min(values), max(values))


def pair_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """ours[k] / theirs[k] for each pair of transfers run back to back; a pair with a zero
    or missing figure on either side is left out."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} transfers against {len(theirs)}: pairs do not match")
    return [a / b for a, b in zip(ours, theirs, strict=True) if a and b]


def abba(k: int) -> tuple[int, int]:
    """Order of pair k: (0, 1) is p2pmed first, (1, 0) bare first. Alternating the order
    cancels a steady drift of the machine's load within a pair of pairs."""
    return (0, 1) if k % 2 == 0 else (1, 0)
