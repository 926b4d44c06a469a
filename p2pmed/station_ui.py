"""Terminal view of a central station: one line per bed, the highest alarm first.

    BED       STATE      HR   SpO2  BP       RR   TEMP  PATH    ALARM
    bed3      live       142  88    128/84   22   37.1  direct  HIGH tachycardia #4

It redraws a few times a second with ANSI escapes and reads whole lines from stdin (the
station's commands: `ack BED [ALARM_ID]`, `quit`). It reads the StationView protocol below,
never the node.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class BedLine(Protocol):
    @property
    def bed(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def values(self) -> Mapping[str, float | None]: ...
    @property
    def path(self) -> str | None: ...

    def top_alarm(self) -> Mapping[str, Any] | None: ...


class StationView(Protocol):
    @property
    def ward(self) -> str: ...
    @property
    def endpoint_id(self) -> str: ...

    def sorted(self) -> Sequence[BedLine]: ...


HEADER = (
    f"{'BED':<12}{'STATE':<10}{'HR':>5}{'SpO2':>6}  {'BP':<9}"
    f"{'RR':>4}{'TEMP':>6}  {'PATH':<7} ALARM"
)


def _n(v: float | None, digits: int = 0) -> str:
    return "--" if v is None else f"{v:.{digits}f}"


def bed_line(row: BedLine) -> str:
    v = row.values
    sys_, dia = v.get("sys"), v.get("dia")
    bp = "--" if sys_ is None or dia is None else f"{sys_:.0f}/{dia:.0f}"
    top = row.top_alarm()
    alarm = ""
    if top is not None:
        acked = " (acked)" if top.get("acked") else ""
        alarm = f"{top.get('priority')} {top.get('condition')} #{top.get('id')}{acked}"
    return (
        f"{row.bed[:11]:<12}{row.state:<10}{_n(v.get('hr')):>5}{_n(v.get('spo2')):>6}  "
        f"{bp:<9}{_n(v.get('rr')):>4}{_n(v.get('temp'), 1):>6}  {(row.path or '-'):<7} {alarm}"
    )


def render(view: StationView) -> list[str]:
    rows = view.sorted()
    out = [f"p2pmed central station  ward {view.ward}  ({view.endpoint_id})  {len(rows)} beds"]
    out.append(HEADER)
    out.extend(bed_line(r) for r in rows)
    out.append("commands: ack BED [ALARM_ID] | quit")
    return out


class StationUI:
    def __init__(self, view: StationView) -> None:
        self.view = view
        self.lines = 0

    def draw(self) -> None:
        lines = render(self.view)
        w = sys.stdout
        if self.lines:
            w.write(f"\x1b[{self.lines}F")
        for line in lines:
            w.write("\x1b[2K" + line + "\n")
        w.flush()
        self.lines = len(lines)

    async def run(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.5)
