"""Terminal UI for the clinician: numerics, a compact ECG trace, alarms, paths, SAS.

It redraws one block of lines with ANSI escapes a few times a second and reads single keys
from stdin when stdin is a TTY:  a = acknowledge alarms,  y = admit a waiting patient,
s = status line to the log,  q = quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from p2pmed.vitals.codec import Param

if TYPE_CHECKING:
    from p2pmed.node.clinician import ClinicianApp

BLOCKS = " ▁▂▃▄▅▆▇█"
WIDTH = 64


def sparkline(values: list[float], width: int = WIDTH) -> str:
    """Min/max-preserving downsample of a trace to `width` block characters."""
    if not values:
        return ""
    step = max(1, len(values) // width)
    cols = [max(values[i : i + step], key=abs) for i in range(0, len(values), step)][-width:]
    lo, hi = min(cols), max(cols)
    span = (hi - lo) or 1.0
    return "".join(BLOCKS[int((v - lo) / span * (len(BLOCKS) - 1))] for v in cols)


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return "--" if value is None else f"{value:.{digits}f} {unit}"


class TerminalUI:
    def __init__(self, app: ClinicianApp) -> None:
        self.app = app
        self.lines = 0
        self._saved: Any = None
        self._bell = False
        self.tty = sys.stdin.isatty() and sys.stdout.isatty()

    def bell(self) -> None:
        self._bell = True

    def render(self) -> list[str]:
        app, node = self.app, self.app.node
        n = app.numerics

        def v(p: Param) -> float | None:
            return n.value(p) if n else None

        out = [f"p2pmed clinician  {node.endpoint_id}  session {node.session_id}"]
        from p2pmed.node.clinician import label_of
        from p2pmed.vitals.status import Stream

        for link in node.peers.values():
            pst = app.status.get(link.peer_id)
            out.append(f"PATIENT {label_of(pst)}")
            if pst is not None and pst.stream is Stream.ENDED:
                out.append("STREAM ENDED: the patient's source has no more data (link still up)")
            st = link.status()
            parts = []
            for name in ("direct", "relay"):
                p = st.get(name)
                if p:
                    parts.append(
                        f"{name}:{'up' if p['up'] else 'DOWN'} "
                        f"{p['rtt_ms']:.1f}ms loss {p['loss'] * 100:.0f}% {p['grade']}"
                    )
            out.append(
                f"patient {link.peer_id}  active={st['active'] or 'NONE'}  "
                f"SAS {link.sas or '(handshaking)'}  " + "  ".join(parts)
            )
        if not node.peers:
            out.append("waiting for the patient ...")
        for peer in app.waiting:
            out.append(f"patient {peer} is waiting: press y to admit")
        hr = _fmt(v(Param.HR), "/min")
        if any(a.condition == "hr-unavailable" for a in app.alarms.values()) or (
            n is not None and v(Param.HR) is None
        ):
            hr = "unavailable"
        sources = {st.hr_source for st in app.status.values() if st.hr_source}
        if hr != "unavailable" and sources & {"ecg-detector", "annotations"}:
            hr += " (from ECG)" if "ecg-detector" in sources else " (from beat annotations)"
        out.append(
            f"HR {hr}  SpO2 {_fmt(v(Param.SPO2), '%')}  "
            f"NIBP {_fmt(v(Param.SYS), '')}/{_fmt(v(Param.DIA), 'mmHg')}  "
            f"RR {_fmt(v(Param.RR), '/min')}  T {_fmt(v(Param.TEMP), 'C', 1)}"
        )
        out.append(f"{app.trace_signal or 'ECG':>5} " + sparkline(list(app.trace)[-1000:]))
        if app.alarms:
            for a in sorted(app.alarms.values(), key=lambda a: -a.priority):
                who = app.acked.get(a.alarm_id)
                mark = f"acked by {who}" if who else "UNACKNOWLEDGED (press a)"
                out.append(f"ALARM {a.priority.name:<6} {a.condition:<14} {a.state.name:<9} {mark}")
        else:
            out.append("no active alarms")
        out.append("keys: a ack  y admit  q quit")
        return out

    def draw(self) -> None:
        lines = self.render()
        buf = []
        if self.lines:
            buf.append(f"\x1b[{self.lines}F")
        for line in lines:
            buf.append("\x1b[2K" + line[:160] + "\n")
        if self._bell:
            buf.append("\a")
            self._bell = False
        sys.stdout.write("".join(buf))
        sys.stdout.flush()
        self.lines = len(lines)

    def key(self, ch: str) -> None:
        if ch == "a":
            self.app.acknowledge()
        elif ch == "y":
            for peer in list(self.app.waiting):
                self.app.admit(peer)
        elif ch in ("q", "\x03"):
            self.app.node.stop()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tty:
            import termios
            import tty

            fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            loop.add_reader(fd, lambda: self.key(os.read(fd, 1).decode(errors="ignore")))
        try:
            while True:
                self.draw()
                await asyncio.sleep(0.25)
        finally:
            self.restore()

    def restore(self) -> None:
        if self._saved is not None:
            import termios

            fd = sys.stdin.fileno()
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)
            self._saved = None
