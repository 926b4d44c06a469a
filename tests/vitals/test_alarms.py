import pytest

from p2pmed.vitals.alarms import (
    AlarmEngine,
    AlarmError,
    CombinationRule,
    Condition,
    ThresholdRule,
    TrendRule,
    default_rules,
)
from p2pmed.vitals.codec import (
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
    decode,
    encode,
)

T0 = 1_700_000_000.0
PID = "bed-7"


def num(
    hr: float | None = 72, spo2: float | None = 98, flags: StatusFlags = StatusFlags.NONE
) -> Numerics:
    return Numerics.from_values(0, PID, {Param.HR: hr, Param.SPO2: spo2}, flags=flags)


def ack(alarm: Alarm, now: float) -> AlarmAck:
    return AlarmAck(alarm.alarm_id, round(now * 1e6), "clin-1")


def hr_rule(priority: Priority = Priority.MEDIUM, cooldown_s: float = 30.0) -> ThresholdRule:
    return ThresholdRule("hr-high", Condition(Param.HR, ">", 120), priority, cooldown_s)


def engine(*rules: ThresholdRule | TrendRule | CombinationRule, **kw: float | None) -> AlarmEngine:
    return AlarmEngine(PID, list(rules), **kw)  # type: ignore[arg-type]


def test_threshold_raise_and_clear() -> None:
    e = engine(hr_rule())
    assert e.feed(num(hr=120), T0) == []  # strictly above the limit
    (a,) = e.feed(num(hr=121), T0 + 1)
    assert (a.condition, a.state, a.priority, a.value) == (
        "hr-high",
        AlarmState.ACTIVE,
        Priority.MEDIUM,
        121.0,
    )
    assert a.category is AlarmCategory.PHYSIOLOGICAL and a.patient_id == PID
    assert a.time_us == round((T0 + 1) * 1e6)
    assert decode(encode(a)) == a
    assert e.feed(num(hr=130), T0 + 2) == []  # still the same alarm, not repeated
    (c,) = e.feed(num(hr=90), T0 + 3)
    assert (c.alarm_id, c.state) == (a.alarm_id, AlarmState.CLEARED)
    assert e.active(T0 + 3) == []


def test_absent_value_does_not_raise() -> None:
    e = engine(hr_rule())
    assert e.feed(num(hr=None), T0) == []


def test_cooldown_suppresses_then_raises_again() -> None:
    e = engine(hr_rule(cooldown_s=30))
    (a,) = e.feed(num(hr=130), T0)
    e.feed(num(hr=80), T0 + 1)  # cleared at T0+1
    assert e.feed(num(hr=130), T0 + 10) == []  # within cooldown
    assert e.stats["suppressed_cooldown"] == 1
    assert e.feed(num(hr=130), T0 + 30.9) == []
    (b,) = e.feed(num(hr=130), T0 + 31)  # condition still there when the cooldown ends
    assert b.state is AlarmState.ACTIVE and b.alarm_id != a.alarm_id


def test_trend_rule_spo2_falling() -> None:
    rule = TrendRule("spo2-falling", Param.SPO2, -4.0, 60.0, Priority.MEDIUM)
    e = engine(rule)
    assert e.feed(num(spo2=98), T0) == []
    assert e.feed(num(spo2=96), T0 + 10) == []
    assert e.feed(num(spo2=94.5), T0 + 20) == []  # fell 3.5 points
    (a,) = e.feed(num(spo2=94), T0 + 30)  # fell 4 points within 60 s
    assert (a.condition, a.value) == ("spo2-falling", 94.0)


def test_trend_rule_ignores_drop_slower_than_window() -> None:
    e = engine(TrendRule("spo2-falling", Param.SPO2, -4.0, 60.0, Priority.MEDIUM))
    for i, spo2 in enumerate([98, 97, 96, 95, 94]):
        # one point every 40 s: a 4-point fall takes 160 s, longer than the window
        assert e.feed(num(spo2=spo2), T0 + 40 * i) == []


def test_trend_rule_rising() -> None:
    e = engine(TrendRule("hr-rising", Param.HR, 30.0, 120.0, Priority.LOW))
    assert e.feed(num(hr=70), T0) == []
    (a,) = e.feed(num(hr=100), T0 + 60)
    assert a.priority is Priority.LOW


def test_combination_rule() -> None:
    rule = CombinationRule(
        "tachy-desat",
        (Condition(Param.HR, ">", 120), Condition(Param.SPO2, "<", 90)),
        Priority.HIGH,
    )
    e = engine(rule)
    assert e.feed(num(hr=130, spo2=95), T0) == []
    assert e.feed(num(hr=100, spo2=85), T0 + 1) == []
    assert e.feed(num(hr=130, spo2=None), T0 + 2) == []
    (a,) = e.feed(num(hr=130, spo2=85), T0 + 3)
    assert (a.condition, a.priority, a.value) == ("tachy-desat", Priority.HIGH, 130.0)


def test_high_priority_latches_until_acknowledged() -> None:
    e = engine(hr_rule(Priority.HIGH), escalate_after_s=None)
    (a,) = e.feed(num(hr=160), T0)
    (latched,) = e.feed(num(hr=80), T0 + 5)  # condition gone
    assert (latched.alarm_id, latched.state) == (a.alarm_id, AlarmState.LATCHED)
    assert e.feed(num(hr=80), T0 + 100) == []  # stays latched
    assert [x.state for x in e.active(T0 + 100)] == [AlarmState.LATCHED]
    (cleared,) = e.acknowledge(ack(a, T0 + 101), T0 + 101)
    assert (cleared.alarm_id, cleared.state) == (a.alarm_id, AlarmState.CLEARED)
    assert e.active(T0 + 101) == []


def test_latched_alarm_reactivates_when_condition_returns() -> None:
    e = engine(hr_rule(Priority.HIGH), escalate_after_s=None)
    (a,) = e.feed(num(hr=160), T0)
    e.feed(num(hr=80), T0 + 1)
    (again,) = e.feed(num(hr=170), T0 + 2)
    assert (again.alarm_id, again.state) == (a.alarm_id, AlarmState.ACTIVE)


def test_medium_priority_does_not_latch() -> None:
    e = engine(hr_rule(Priority.MEDIUM))
    e.feed(num(hr=130), T0)
    (c,) = e.feed(num(hr=80), T0 + 1)
    assert c.state is AlarmState.CLEARED


def test_ack_while_condition_present_clears_when_condition_goes() -> None:
    e = engine(hr_rule(Priority.HIGH), escalate_after_s=10)
    (a,) = e.feed(num(hr=160), T0)
    assert e.acknowledge(ack(a, T0 + 1), T0 + 1) == []
    assert e.tick(T0 + 60) == []  # acknowledged: no escalation
    (c,) = e.feed(num(hr=80), T0 + 61)  # acked, so no latching
    assert c.state is AlarmState.CLEARED


def test_escalation_raises_priority_and_reannounces() -> None:
    e = engine(hr_rule(Priority.LOW), escalate_after_s=30)
    (a,) = e.feed(num(hr=130), T0)
    assert e.tick(T0 + 29.9) == []
    (x,) = e.tick(T0 + 30)
    assert (x.alarm_id, x.state, x.priority) == (a.alarm_id, AlarmState.ESCALATED, Priority.MEDIUM)
    assert e.tick(T0 + 59) == []  # timer restarted at the escalation
    (y,) = e.tick(T0 + 60)
    assert y.priority is Priority.HIGH
    (z,) = e.tick(T0 + 90)  # HIGH stays HIGH, announced again
    assert z.priority is Priority.HIGH and z.state is AlarmState.ESCALATED
    assert e.stats["escalated"] == 3
    # escalated to HIGH, so the alarm now latches
    (latched,) = e.feed(num(hr=80), T0 + 91)
    assert latched.state is AlarmState.LATCHED
    (cleared,) = e.acknowledge(ack(a, T0 + 92), T0 + 92)
    assert cleared.state is AlarmState.CLEARED
    assert e.tick(T0 + 500) == []


def test_escalation_of_latched_alarm() -> None:
    e = engine(hr_rule(Priority.HIGH), escalate_after_s=20)
    e.feed(num(hr=160), T0)
    e.feed(num(hr=80), T0 + 1)
    (x,) = e.tick(T0 + 21)  # last announcement (LATCHED) at T0+1
    assert x.state is AlarmState.ESCALATED


def test_unknown_and_duplicate_ack() -> None:
    e = engine(hr_rule(Priority.MEDIUM))
    with pytest.raises(AlarmError) as exc:
        e.acknowledge(AlarmAck(999, 0, "clin-1"), T0)
    assert exc.value.reason == "unknown-alarm"
    (a,) = e.feed(num(hr=130), T0)
    e.feed(num(hr=80), T0 + 1)
    assert e.acknowledge(ack(a, T0 + 2), T0 + 2) == []  # already cleared: harmless


def test_technical_alarm_api() -> None:
    e = engine(hr_rule())
    (a,) = e.raise_technical("comms-lost", T0, Priority.HIGH)
    assert (a.category, a.condition, a.value, a.priority) == (
        AlarmCategory.TECHNICAL,
        "comms-lost",
        None,
        Priority.HIGH,
    )
    assert e.raise_technical("comms-lost", T0 + 1, Priority.HIGH) == []  # idempotent
    (latched,) = e.clear_technical("comms-lost", T0 + 2)  # HIGH: latches until acknowledged
    assert latched.state is AlarmState.LATCHED
    (c,) = e.acknowledge(ack(a, T0 + 3), T0 + 3)
    assert c.state is AlarmState.CLEARED
    assert e.clear_technical("comms-lost", T0 + 4) == []
    (m,) = e.raise_technical("battery", T0 + 5)
    (mc,) = e.clear_technical("battery", T0 + 6)
    assert (m.priority, mc.state) == (Priority.MEDIUM, AlarmState.CLEARED)
    assert e.clear_technical("hr-high", T0) == []  # not a technical alarm code


def test_device_flags_raise_technical_alarms() -> None:
    e = engine()
    (f,) = e.feed(num(flags=StatusFlags.SENSOR_FAULT), T0)
    assert (f.condition, f.category) == ("sensor-fault", AlarmCategory.TECHNICAL)
    (c,) = e.feed(num(), T0 + 1)
    assert (c.alarm_id, c.state) == (f.alarm_id, AlarmState.CLEARED)
    (b,) = e.feed(num(flags=StatusFlags.LOW_BATTERY), T0 + 2)
    assert (b.condition, b.priority) == ("low-battery", Priority.LOW)


def test_set_limit_and_control() -> None:
    e = engine(hr_rule())
    e.apply_control(Control(Command.SET_ALARM_LIMIT, 1, rule="hr-high", limit=140.0))
    assert e.feed(num(hr=130), T0) == []
    (a,) = e.feed(num(hr=141), T0 + 1)
    e.apply_control(Control(Command.SET_ALARM_LIMIT, 2, rule="hr-high", limit=None))
    (c,) = e.feed(num(hr=141), T0 + 2)  # rule disabled: the alarm clears
    assert (c.alarm_id, c.state) == (a.alarm_id, AlarmState.CLEARED)
    with pytest.raises(AlarmError):
        e.set_limit("nope", 1.0)
    with pytest.raises(AlarmError):
        e.apply_control(Control(Command.PING_TEXT, 3, text="hi"))
    e2 = engine(TrendRule("t", Param.HR, 1.0, 10.0, Priority.LOW))
    with pytest.raises(AlarmError):
        e2.set_limit("t", 1.0)


def test_numerics_of_other_patient_rejected() -> None:
    e = engine(hr_rule())
    with pytest.raises(AlarmError):
        e.feed(Numerics.from_values(0, "someone-else", {Param.HR: 150}), T0)


def test_default_rules_and_ids() -> None:
    e = AlarmEngine(PID, first_alarm_id=1000)
    out = e.feed(num(hr=130, spo2=85), T0)
    codes = {a.condition for a in out}
    assert codes == {"hr-high", "spo2-low", "tachy-desat"}
    assert sorted(a.alarm_id for a in out) == [1000, 1001, 1002]
    assert len({r.code for r in default_rules()}) == len(default_rules())
    with pytest.raises(AlarmError):
        AlarmEngine(PID, [hr_rule(), hr_rule()])
