"""Physiological plausibility ranges.

A value outside its range is most likely an artefact or a sensor problem, but it may
be real: it is MARKED suspect (a flag bit) and passed on unchanged, never dropped or
clamped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from p2pmed.vitals.codec import Numerics, Param, StatusFlags, suspect_flag


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    unit: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


RANGES: dict[Param, Range] = {
    Param.HR: Range(30, 250, "/min"),
    Param.SYS: Range(40, 300, "mmHg"),
    Param.DIA: Range(20, 200, "mmHg"),
    Param.SPO2: Range(50, 100, "%"),
    Param.TEMP: Range(25, 45, "Cel"),
    Param.RR: Range(3, 80, "/min"),
}


def suspect_params(n: Numerics) -> set[Param]:
    """Parameters of `n` whose value is implausible."""
    out = {p for p in Param if (v := n.value(p)) is not None and not RANGES[p].contains(v)}
    sys, dia = n.value(Param.SYS), n.value(Param.DIA)
    if sys is not None and dia is not None and sys <= dia:
        out |= {Param.SYS, Param.DIA}
    return out


def mark_suspect(n: Numerics) -> Numerics:
    """Return `n` with the suspect bit set for every implausible value (values untouched).

    Suspect bits already set (e.g. by the device) are kept.
    """
    flags = n.flags
    for p in suspect_params(n):
        flags |= suspect_flag(p)
    return n if flags == n.flags else replace(n, flags=StatusFlags(flags))
