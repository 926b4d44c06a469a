"""Terminal UI for the clinician: numerics, a compact ECG trace, alarms, paths, SAS.

It redraws one block of lines with ANSI escapes a few times a second and reads single keys
from stdin when stdin is a TTY:  a = acknowledge alarms (vital and identity),  v = the SAS
shown matches the one the patient reads out (recorded in the trust store, as the --json
{"cmd": "verify"} command does),  y = admit a waiting patient,  q = quit.

It reads the clinician through the small ClinicianView protocol below, never its internals.

A refused identity (`technical-alarm` identity-changed, unknown-identity, trust-store) is
shown at the top in reverse video with the bell until acknowledged: it may be a man in the
middle, and vitals from that patient stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from p2pmed.vitals.codec import DEVICE_CATEGORIES, Alarm, Numerics, Param, PatientStatus, Stream
from p2pmed.vitals.summary import label_of

BLOCKS = " ▁▂▃▄▅▆▇█"
WIDTH = 64
IDENTITY_ALARMS = ("identity-changed", "unknown-identity", "trust-store")
LOUD = "!!!"  # lines starting with this are drawn in reverse video


@dataclass(frozen=True)
class PatientLine:
    """One patient link as the view shows it."""

    peer_id: str
    role: str
    paths: Mapping[str, Any]  # {"active": ..., "direct"/"relay": {"up", "rtt_ms", "loss", "grade"}}
    sas: str  # "" while handshaking
    established: bool  # an established, accepted session that is still open
    fingerprint: str  # the patient's identity key, once the handshake told it


class ClinicianView(Protocol):
    """What the terminal view reads of the clinician, and the actions its keys take."""

    @property
    def endpoint_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def numerics(self) -> Numerics | None: ...
    @property
    def trace(self) -> Sequence[float]: ...
    @property
    def trace_signal(self) -> str: ...
    @property
    def alarms(self) -> Mapping[int, Alarm]: ...  # open alarms by id
    @property
    def acked(self) -> Mapping[int, str]: ...  # alarm id -> who acknowledged it
    @property
    def status(self) -> Mapping[str, PatientStatus]: ...  # patient endpoint id -> last status
    @property
    def waiting(self) -> Sequence[str]: ...  # patients waiting to be admitted

    def patients(self) -> list[PatientLine]: ...
    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None: ...
    def is_verified(self, fingerprint: str, role: str) -> bool: ...
    def acknowledge(self, alarm_id: int | None = None) -> int: ...
    def admit(self, peer_id: str) -> None: ...
    def verify_sas(self, peer_id: str | None, sas: str | None) -> None: ...
    def quit(self) -> None: ...


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
    def __init__(self, app: ClinicianView) -> None:
        self.app = app
        self.lines = 0
        self._saved: Any = None
        self._bell = False
        self.tty = sys.stdin.isatty() and sys.stdout.isatty()
        # refused identities not yet acknowledged, by (code, fingerprint): the event
        self.identity_alarms: dict[tuple[str, str], dict[str, Any]] = {}
        self.verified: set[str] = set()  # fingerprints whose SAS the user marked verified
        self.notice = ""  # the outcome of the last key that has one
        self._shown_sas: dict[str, str] = {}  # peer -> SAS on screen (what `v` confirms)
        self._looked_up: set[str] = set()  # fingerprints looked up in the trust store
        # a bedside device feeding a patient (--source hl7-mllp:/sdc:): its last DEVICE and
        # METRIC messages, as the node's `message` events describe them
        self.devices: dict[str, dict[str, Any]] = {}
        self.device_metrics: dict[str, dict[int, dict[str, Any]]] = {}
        app.listen(self.on_event)

    def bell(self) -> None:
        self._bell = True

    def on_event(self, e: dict[str, Any]) -> None:
        name = e.get("event")
        if name == "technical-alarm" and e.get("code") in IDENTITY_ALARMS:
            self.identity_alarms[(str(e["code"]), str(e.get("fingerprint", "")))] = e
            self.bell()
        elif name == "trust" and e.get("action") == "verified":
            self.verified.add(str(e.get("fingerprint")))
            self.notice = f"SAS verified with {e.get('peer')}: recorded in the trust store"
        elif name == "error" and str(e.get("message", "")).startswith("verify"):
            self.notice = f"not verified: {e.get('message')}"
        elif name == "store-failed":
            self.notice = f"STORE FAILED, nothing new is shown until it works: {e.get('message')}"
            self.bell()
        elif name == "store-recovered":
            self.notice = f"store writable again after {e.get('failed_s')} s"
        elif name == "message" and e.get("kind") == "device":
            self.devices[str(e.get("peer"))] = e
        elif name == "message" and e.get("kind") == "metric":
            self.device_metrics.setdefault(str(e.get("peer")), {})[int(e["code"])] = e

    def render(self) -> list[str]:
        app = self.app
        n = app.numerics

        def v(p: Param) -> float | None:
            return n.value(p) if n else None

        out = [f"p2pmed clinician  {app.endpoint_id}  session {app.session_id}"]
        for e in self.identity_alarms.values():
            out.extend(_identity_lines(e))
        patients = app.patients()
        for link in patients:
            pst = app.status.get(link.peer_id)
            out.append(f"PATIENT {label_of(pst)}")
            if pst is not None and pst.stream is Stream.ENDED:
                out.append("STREAM ENDED: the patient's source has no more data (link still up)")
            st = link.paths
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
                f"SAS {link.sas or '(handshaking)'}{self._sas_mark(link)}  " + "  ".join(parts)
            )
            if link.sas:
                self._shown_sas[link.peer_id] = link.sas
            out.extend(self._device_lines(link.peer_id))
        if not patients:
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
                kind = "DEVICE ALARM" if a.category in DEVICE_CATEGORIES else "ALARM"
                out.append(
                    f"{kind} {a.priority.name:<6} {a.condition:<14} {a.state.name:<9} {mark}"
                )
        else:
            out.append("no active alarms")
        if self.notice:
            out.append(self.notice)
        out.append("keys: a ack  v SAS matches  y admit  q quit")
        return out

    def _device_lines(self, peer: str) -> list[str]:
        """The bedside device (identity, connected or lost) and its other metrics."""
        d = self.devices.get(peer)
        if d is None:
            return []
        about = ", ".join(
            x
            for x in (
                d.get("manufacturer"),
                d.get("model"),
                d.get("serial") and f"sn {d['serial']}",
            )
            if x
        )
        state = "connected" if d.get("state") == "CONNECTED" else "LOST: no data from it"
        lines = [f"DEVICE {d.get('protocol')} {d.get('device_id')}{f' ({about})' if about else ''}"
                 f"  {state}"]  # fmt: skip
        metrics = []
        for m in self.device_metrics.get(peer, {}).values():
            flag = " INVALID" if not m.get("valid", True) else ""
            metrics.append(
                f"{m.get('label') or m.get('code')} {m.get('value'):g} {m.get('unit')}{flag}"
            )
        if metrics:
            lines.append("  " + "  ".join(metrics))
        return lines

    def _sas_mark(self, link: PatientLine) -> str:
        if not link.sas or not link.established:
            return ""
        fp = link.fingerprint
        if fp not in self._looked_up:  # verified in an earlier run of this consultation?
            self._looked_up.add(fp)
            if self.app.is_verified(fp, link.role):
                self.verified.add(fp)
        if fp in self.verified:
            return " (verified)"
        return " (read it to the patient; v if it matches)"

    def draw(self) -> None:
        lines = self.render()
        buf = []
        if self.lines:
            buf.append(f"\x1b[{self.lines}F")
        for line in lines:
            text = line[:160]
            if line.startswith(LOUD):
                text = "\x1b[1;7m" + text + "\x1b[0m"
            buf.append("\x1b[2K" + text + "\n")
        if self._bell:
            buf.append("\a")
            self._bell = False
        sys.stdout.write("".join(buf))
        sys.stdout.flush()
        self.lines = len(lines)

    def key(self, ch: str) -> None:
        if ch == "a":
            self.app.acknowledge()
            self.identity_alarms.clear()
        elif ch == "v":
            self.verify()
        elif ch == "y":
            for peer in list(self.app.waiting):
                self.app.admit(peer)
        elif ch in ("q", "\x03"):
            self.app.quit()

    def verify(self) -> None:
        """The SAS on screen matches what the patient reads out: the node records it (or
        says why not: no patient, several, or the SAS changed since it was drawn)."""
        self.notice = ""
        links = [
            link
            for link in self.app.patients()
            if link.established and link.peer_id in self._shown_sas
        ]
        if len(links) == 1:
            peer = links[0].peer_id
            self.app.verify_sas(peer, self._shown_sas[peer])
        else:  # the node's own message: no established peer, or several
            self.app.verify_sas(None, None)

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


def _identity_lines(e: dict[str, Any]) -> list[str]:
    role, fp = e.get("role", "peer"), e.get("fingerprint", "?")
    code = e.get("code")
    head = f"{LOUD} {e.get('priority', 'HIGH')} TECHNICAL ALARM {code}: "
    if code == "identity-changed":
        pinned = ", ".join(e.get("expected") or []) or "?"
        return [
            head + f"the {role} presents {fp}, not the pinned {pinned}: refused",
            f"{LOUD} possibly a man in the middle: call the patient's site; enrol the new key "
            "(p2pmed trust add) only after checking it.  a: acknowledge",
        ]
    if code == "unknown-identity":
        return [
            head + f"{role} {fp} is not enrolled (--require-known-peers): refused",
            f"{LOUD} enrol it with p2pmed trust add only after checking who it is.  a: acknowledge",
        ]
    return [head + str(e.get("message", "")), f"{LOUD} a: acknowledge"]
