"""Alarm engine on a patient's own numerics (sans-IO: `now` is float seconds, Unix time).

Life of an alarm (one open alarm per rule or technical code at a time):

- the rule's condition becomes true and the rule is not cooling down -> ACTIVE is sent;
- the condition clears: a latching alarm (HIGH priority, or a rule marked latching) that
  nobody acknowledged becomes LATCHED and stays; any other alarm is CLEARED;
- nobody acknowledges within `escalate_after_s` of the last announcement -> the priority is
  raised one step (LOW -> MEDIUM -> HIGH; HIGH stays HIGH), ESCALATED is sent, and the
  timer starts again. An alarm escalated to HIGH latches;
- acknowledge(): stops escalation; a LATCHED alarm is CLEARED at once, an alarm whose
  condition is still present is CLEARED when the condition goes;
- after a CLEARED, the same rule cannot raise again for `cooldown_s` (against flapping). A
  condition still present when the cooldown ends raises a new alarm at the next feed.

Values marked suspect (see ranges.py) are evaluated like any other: an implausible value
may still be real, and the alarm carries it for the clinician to judge.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from p2pmed.core.errors import ProtocolError
from p2pmed.vitals.codec import (
    DEVICE_CATEGORIES,
    Alarm,
    AlarmAck,
    AlarmCategory,
    AlarmState,
    Command,
    Control,
    Numerics,
    Param,
    Priority,
    StatusFlags,
)


class AlarmError(ProtocolError):
    """An acknowledgement or command the alarm engine cannot apply."""

    kind = "alarm"


@dataclass(frozen=True)
class Condition:
    param: Param
    op: Literal["<", ">"]
    limit: float

    def value_if_true(self, n: Numerics) -> float | None:
        v = n.value(self.param)
        if v is None:
            return None
        return v if (v < self.limit if self.op == "<" else v > self.limit) else None


@dataclass(frozen=True)
class ThresholdRule:
    code: str
    condition: Condition
    priority: Priority
    cooldown_s: float = 30.0
    latching: bool | None = None  # None: latch when HIGH


@dataclass(frozen=True)
class TrendRule:
    """Fires when `param` moved by at least `change` (signed, in the parameter's own unit,
    e.g. -4.0 = SpO2 fell by >= 4 percentage points) against the highest (falling) or lowest
    (rising) value seen within the last `window_s` seconds."""

    code: str
    param: Param
    change: float
    window_s: float
    priority: Priority
    cooldown_s: float = 60.0
    latching: bool | None = None


@dataclass(frozen=True)
class CombinationRule:
    """Fires when every condition holds in the same numerics."""

    code: str
    conditions: tuple[Condition, ...]
    priority: Priority
    cooldown_s: float = 30.0
    latching: bool | None = None


Rule = ThresholdRule | TrendRule | CombinationRule


def default_rules() -> list[Rule]:
    P, C = Param, Condition
    return [
        ThresholdRule("hr-high", C(P.HR, ">", 120), Priority.MEDIUM),
        ThresholdRule("hr-very-high", C(P.HR, ">", 150), Priority.HIGH),
        ThresholdRule("hr-low", C(P.HR, "<", 40), Priority.HIGH),
        ThresholdRule("spo2-low", C(P.SPO2, "<", 90), Priority.MEDIUM),
        ThresholdRule("spo2-very-low", C(P.SPO2, "<", 85), Priority.HIGH),
        ThresholdRule("sys-high", C(P.SYS, ">", 180), Priority.MEDIUM),
        ThresholdRule("sys-low", C(P.SYS, "<", 90), Priority.MEDIUM),
        ThresholdRule("rr-high", C(P.RR, ">", 30), Priority.MEDIUM),
        ThresholdRule("rr-low", C(P.RR, "<", 8), Priority.HIGH),
        ThresholdRule("temp-high", C(P.TEMP, ">", 39), Priority.LOW),
        TrendRule("spo2-falling", P.SPO2, -4.0, 60.0, Priority.MEDIUM),
        CombinationRule("tachy-desat", (C(P.HR, ">", 120), C(P.SPO2, "<", 90)), Priority.HIGH),
    ]


@dataclass
class _Open:
    alarm_id: int
    code: str
    category: AlarmCategory
    priority: Priority
    latching: bool
    value: float | None
    state: AlarmState
    announced_at: float
    present: bool = True
    acked: bool = False


HISTORY_BUCKET_S = 0.25  # trend history resolution (numerics once a second: one entry each)


def unavailable_code(param: Param) -> str:
    """Technical condition code for an expected parameter the source cannot deliver."""
    return f"{param.name.lower()}-unavailable"


def _us(now: float) -> int:
    return max(0, round(now * 1_000_000))


@dataclass
class AlarmEngine:
    patient_id: str
    rules: list[Rule] = field(default_factory=default_rules)
    escalate_after_s: float | None = 60.0  # None: never escalate
    first_alarm_id: int = 1
    recent_closed: int = 1024  # closed ids remembered so a late duplicate ack is harmless
    # parameters the source should always deliver (HR derived from a replayed ECG): absent
    # from `unavailable_after` numerics in a row -> technical "<param>-unavailable", so the
    # clinician sees the missing value as a condition, not as a blank
    expected: tuple[Param, ...] = ()
    unavailable_after: int = 3

    def __post_init__(self) -> None:
        codes = [r.code for r in self.rules]
        if len(set(codes)) != len(codes):
            raise AlarmError("duplicate-rule", "rule codes must be unique")
        self._next_id = self.first_alarm_id
        self._open: dict[str, _Open] = {}  # by rule / technical code
        self._cooldown_until: dict[str, float] = {}
        # per parameter: (time, highest, lowest) of the values within HISTORY_BUCKET_S of
        # that time, so a device reporting many times a second keeps the window short
        self._history: dict[Param, deque[tuple[float, float, float]]] = {}
        self._closed: deque[int] = deque(maxlen=self.recent_closed)
        self._disabled: set[str] = set()
        self._absent: dict[Param, int] = {}
        self.stats: dict[str, int] = {"raised": 0, "suppressed_cooldown": 0, "escalated": 0}

    # -- public API -----------------------------------------------------------------------

    def feed(self, n: Numerics, now: float) -> list[Alarm]:
        """Evaluate every rule on new numerics; returns the alarm messages to send."""
        if n.patient_id != self.patient_id:
            raise AlarmError("patient", "numerics of another patient")
        self._remember(n, now)
        out: list[Alarm] = []
        for rule in self.rules:
            value = None if rule.code in self._disabled else self._evaluate(rule, n, now)
            out += self._update(
                rule.code,
                value is not None,
                value,
                now,
                rule.priority,
                rule.latching,
                rule.cooldown_s,
            )
        for flag, code, prio in (
            (StatusFlags.SENSOR_FAULT, "sensor-fault", Priority.MEDIUM),
            (StatusFlags.LOW_BATTERY, "low-battery", Priority.LOW),
        ):
            if n.flags & flag:
                out += self.raise_technical(code, now, prio)
            else:
                out += self.clear_technical(code, now)
        for p in self.expected:
            code = unavailable_code(p)
            if n.value(p) is None:
                self._absent[p] = self._absent.get(p, 0) + 1
                if self._absent[p] >= self.unavailable_after:
                    out += self.raise_technical(code, now, Priority.MEDIUM)
            else:
                self._absent[p] = 0
                out += self.clear_technical(code, now)
        return out

    def tick(self, now: float) -> list[Alarm]:
        """Escalate alarms nobody acknowledged in time."""
        if self.escalate_after_s is None:
            return []
        out: list[Alarm] = []
        for a in self._open.values():
            if a.category in DEVICE_CATEGORIES:  # the device owns its alarms' priority
                continue
            if a.acked or now - a.announced_at < self.escalate_after_s:
                continue
            a.priority = Priority(min(Priority.HIGH, a.priority + 1))
            a.latching = a.latching or a.priority is Priority.HIGH
            a.state = AlarmState.ESCALATED
            a.announced_at = now
            self.stats["escalated"] += 1
            out.append(self._message(a, now))
        return out

    def acknowledge(self, ack: AlarmAck, now: float) -> list[Alarm]:
        """Apply a clinician's ALARM_ACK; returns messages to send (a CLEARED, or nothing)."""
        for code, a in self._open.items():
            if a.alarm_id == ack.alarm_id:
                a.acked = True
                if not a.present:
                    return [self._close(code, now, cooldown_s=self._cooldown_of(code))]
                return []
        if ack.alarm_id in self._closed:
            return []  # already cleared: a second clinician's ack, or a retransmission
        raise AlarmError("unknown-alarm", f"no alarm {ack.alarm_id}")

    def raise_technical(
        self,
        code: str,
        now: float,
        priority: Priority = Priority.MEDIUM,
        value: float | None = None,
    ) -> list[Alarm]:
        """Raise (or keep) a technical alarm, e.g. "comms-lost"; idempotent while open."""
        return self._update(
            code, True, value, now, priority, None, 0.0, category=AlarmCategory.TECHNICAL
        )

    def device_alert(
        self,
        code: str,
        active: bool,
        now: float,
        priority: Priority,
        *,
        technical: bool = False,
    ) -> list[Alarm]:
        """A bedside device's own alert condition, forwarded as it is: the device decides when
        it starts, changes priority and ends; p2pmed never escalates or latches it."""
        category = (
            AlarmCategory.DEVICE_TECHNICAL if technical else AlarmCategory.DEVICE_PHYSIOLOGICAL
        )
        a = self._open.get(code)
        if active and a is not None and a.priority is not priority:
            a.priority = priority
            a.state = AlarmState.ACTIVE
            a.announced_at = now
            return [self._message(a, now)]
        if not active and (a is None or a.category not in DEVICE_CATEGORIES):
            return []
        return self._update(code, active, None, now, priority, False, 0.0, category=category)

    def clear_technical(self, code: str, now: float) -> list[Alarm]:
        a = self._open.get(code)
        if a is None or a.category is not AlarmCategory.TECHNICAL:
            return []
        return self._update(code, False, None, now, a.priority, a.latching, 0.0)

    def set_limit(self, code: str, limit: float | None) -> None:
        """Change a threshold rule's limit; None disables the rule until a limit is set."""
        for i, rule in enumerate(self.rules):
            if rule.code == code:
                if not isinstance(rule, ThresholdRule):
                    raise AlarmError("rule-kind", f"{code} is not a threshold rule")
                if limit is None:
                    self._disabled.add(code)
                else:
                    cond = Condition(rule.condition.param, rule.condition.op, limit)
                    self.rules[i] = ThresholdRule(
                        code, cond, rule.priority, rule.cooldown_s, rule.latching
                    )
                    self._disabled.discard(code)
                return
        raise AlarmError("unknown-rule", code)

    def apply_control(self, control: Control) -> None:
        if control.command is not Command.SET_ALARM_LIMIT:
            raise AlarmError("command", f"{control.command.name} is not an alarm command")
        self.set_limit(control.rule, control.limit)

    def active(self, now: float) -> list[Alarm]:
        """Current state of every open alarm (for a clinician who (re)joins)."""
        return [self._message(a, now) for a in self._open.values()]

    # -- internals ------------------------------------------------------------------------

    def _remember(self, n: Numerics, now: float) -> None:
        windows: dict[Param, float] = {}
        for r in self.rules:
            if isinstance(r, TrendRule):
                windows[r.param] = max(windows.get(r.param, 0.0), r.window_s)
        for p, w in windows.items():
            h = self._history.setdefault(p, deque())
            v = n.value(p)
            if v is not None:
                if h and now - h[-1][0] < HISTORY_BUCKET_S:
                    t, hi, lo = h[-1]
                    h[-1] = (t, max(hi, v), min(lo, v))
                else:
                    h.append((now, v, v))
            while h and h[0][0] < now - w:
                h.popleft()

    def _evaluate(self, rule: Rule, n: Numerics, now: float) -> float | None:
        if isinstance(rule, ThresholdRule):
            return rule.condition.value_if_true(n)
        if isinstance(rule, CombinationRule):
            values = [c.value_if_true(n) for c in rule.conditions]
            return values[0] if all(v is not None for v in values) else None
        current = n.value(rule.param)
        if current is None:
            return None
        window = [e for e in self._history.get(rule.param, ()) if e[0] >= now - rule.window_s]
        if not window:
            return None
        if rule.change < 0:
            return current if current - max(e[1] for e in window) <= rule.change else None
        return current if current - min(e[2] for e in window) >= rule.change else None

    def _cooldown_of(self, code: str) -> float:
        for r in self.rules:
            if r.code == code:
                return r.cooldown_s
        return 0.0

    def _update(
        self,
        code: str,
        present: bool,
        value: float | None,
        now: float,
        priority: Priority,
        latching: bool | None,
        cooldown_s: float,
        *,
        category: AlarmCategory = AlarmCategory.PHYSIOLOGICAL,
    ) -> list[Alarm]:
        a = self._open.get(code)
        if present:
            if a is not None:
                a.present = True
                if a.state is AlarmState.LATCHED:
                    a.state = AlarmState.ACTIVE
                    return [self._message(a, now)]
                return []
            if now < self._cooldown_until.get(code, float("-inf")):
                self.stats["suppressed_cooldown"] += 1
                return []
            a = _Open(
                alarm_id=self._next_id,
                code=code,
                category=category,
                priority=priority,
                latching=priority is Priority.HIGH if latching is None else latching,
                value=value,
                state=AlarmState.ACTIVE,
                announced_at=now,
            )
            self._next_id += 1
            self._open[code] = a
            self.stats["raised"] += 1
            return [self._message(a, now)]
        if a is None or not a.present:
            return []
        a.present = False
        if a.latching and not a.acked:
            a.state = AlarmState.LATCHED
            return [self._message(a, now)]
        return [self._close(code, now, cooldown_s)]

    def _close(self, code: str, now: float, cooldown_s: float) -> Alarm:
        a = self._open.pop(code)
        a.state = AlarmState.CLEARED
        self._closed.append(a.alarm_id)
        if cooldown_s > 0:
            self._cooldown_until[code] = now + cooldown_s
        return self._message(a, now)

    def _message(self, a: _Open, now: float) -> Alarm:
        return Alarm(
            alarm_id=a.alarm_id,
            priority=a.priority,
            state=a.state,
            category=a.category,
            time_us=_us(now),
            value=a.value,
            condition=a.code,
            patient_id=self.patient_id,
        )
