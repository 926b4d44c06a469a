"""p2pmed/devices/mapping.py: device readings -> vitals codec messages."""

from __future__ import annotations

import pytest

from p2pmed.devices import reading as rd
from p2pmed.devices.mapping import (
    DISCONNECTED,
    MISMATCH,
    DeviceMapper,
    alert_condition,
    convert,
)
from p2pmed.vitals import codec
from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import (
    Alarm,
    AlarmCategory,
    AlarmState,
    DeviceMetric,
    DeviceState,
    DeviceStatus,
    Numerics,
    Param,
    Priority,
    Waveform,
)

NOW = 1_700_000_000.0
T_US = 1_700_000_000_000_000


def mapper(expected: str | None = None) -> DeviceMapper:
    return DeviceMapper("bed-7", AlarmEngine("bed-7"), expected_patient=expected)


def metric(code: int, value: float, unit: str, valid: bool = True, label: str = "") -> rd.Metric:
    return rd.Metric(code, value, unit, valid, T_US, label)


def feed_all(m: DeviceMapper, readings: list[rd.Reading], now: float = NOW) -> list[codec.Message]:
    out: list[codec.Message] = []
    for r in readings:
        out += m.feed(r, now)
    return out + m.flush(now)


def only(msgs: list[codec.Message], kind: type) -> list:  # type: ignore[type-arg]
    return [x for x in msgs if isinstance(x, kind)]


def test_vitals_into_one_numerics_with_units_converted() -> None:
    m = mapper()
    out = feed_all(
        m,
        [
            metric(147842, 72, "264864"),  # MDC_DIM_BEAT_PER_MIN as a code
            metric(150456, 97.5, "MDC_DIM_PERCENT"),
            metric(150301, 16.0, "kPa"),
            metric(150302, 10.6658, "MDC_DIM_KILO_PASCAL"),
            metric(150364, 98.6, "[degF]"),
            metric(151562, 14, "{breaths}/min"),
        ],
    )
    (n,) = only(out, Numerics)
    assert n.patient_id == "bed-7" and n.timestamp_us == T_US
    assert n.value(Param.HR) == 72.0
    assert n.value(Param.SPO2) == 97.5
    assert n.value(Param.SYS) == 120.0  # 16 kPa
    assert n.value(Param.DIA) == 80.0
    assert n.value(Param.TEMP) == 37.0  # 98.6 degF
    assert n.value(Param.RR) == 14.0
    assert not only(out, DeviceMetric) and not m.counts


def test_other_metrics_carried_with_their_code_never_dropped() -> None:
    m = mapper()
    out = feed_all(
        m,
        [
            metric(149530, 71, "/min", label="MDC_PULS_OXIM_PULS_RATE"),
            metric(150303, 12.0, "kPa"),
            metric(150033, 131, "mmHg"),
            metric(150034, 79, "mm[Hg]"),
            metric(150035, 96, "266016"),
            metric(999999, 3.25, "MDC_DIM_WHATEVER", label="MDC_SOMETHING_ELSE"),
        ],
    )
    assert not only(out, Numerics)
    got = {x.code: x for x in only(out, DeviceMetric)}
    assert set(got) == {149530, 150303, 150033, 150034, 150035, 999999}
    assert got[149530].value == 71 and got[149530].unit == "/min" and got[149530].valid
    assert got[150303].unit == "mm[Hg]" and got[150303].value == pytest.approx(90.0, abs=0.01)
    assert got[150303].label == "MDC_PRESS_BLD_NONINV_MEAN"  # from the table
    assert got[999999].unit == "MDC_DIM_WHATEVER" and got[999999].value == 3.25
    assert m.counts["metric-unmapped"] == 1
    for x in got.values():  # each encodes and decodes as it is
        assert codec.decode(codec.encode(x)) == x


def test_invalid_metric_flagged_off_the_display_and_never_alarmed_on() -> None:
    m = mapper()
    first = feed_all(m, [metric(147842, 72, "/min"), metric(150456, 97, "%")])
    assert only(first, Numerics)[0].value(Param.SPO2) == 97.0
    out = feed_all(m, [metric(150456, 40, "%", valid=False)], NOW + 1)
    (flagged,) = only(out, DeviceMetric)
    assert flagged.code == 150456 and flagged.value == 40 and not flagged.valid
    (n,) = only(out, Numerics)
    assert n.value(Param.SPO2) is None and n.value(Param.HR) == 72.0
    assert m.engine.feed(n, NOW + 1) == []  # SpO2 40 % would be spo2-very-low


def test_unit_without_conversion_is_carried_not_put_in_numerics() -> None:
    m = mapper()
    out = feed_all(m, [metric(150301, 120, "furlongs"), metric(147842, 1.2, "Hz")])
    assert not only(out, Numerics)
    assert {x.code for x in only(out, DeviceMetric)} == {150301, 147842}
    assert m.counts["metric-unit-unknown"] == 2


def test_mismatched_unit_dimension_is_not_a_vital() -> None:
    m = mapper()
    out = feed_all(m, [metric(150456, 37, "Cel")])  # SpO2 in degrees
    assert not only(out, Numerics)
    assert only(out, DeviceMetric)[0].unit == "Cel"
    assert m.counts["metric-unit-mismatch"] == 1


def test_numerics_out_of_range_marked_suspect_out_of_field_carried() -> None:
    m = mapper()
    out = feed_all(m, [metric(147842, 300, "/min"), metric(151562, -1, "/min")])
    (n,) = only(out, Numerics)
    assert n.suspect(Param.HR)
    (rr,) = only(out, DeviceMetric)
    assert rr.code == 151562 and rr.value == -1
    assert m.counts["metric-out-of-field"] == 1


def test_stale_values_leave_numerics() -> None:
    m = mapper()
    feed_all(m, [metric(147842, 72, "/min"), metric(150301, 120, "mmHg")])
    (n,) = only(feed_all(m, [metric(150456, 96, "%")], NOW + 60), Numerics)
    assert n.value(Param.HR) is None  # 60 s old: continuous values go stale in 10 s
    assert n.value(Param.SYS) == 120.0  # NIBP is measured now and then
    assert n.value(Param.SPO2) == 96.0


def test_waveforms_at_their_rate_with_continuous_sample_numbers() -> None:
    m = mapper()
    ecg = rd.Samples(131330, 500.0, tuple(i / 1000 for i in range(50)), "mV", True, T_US)
    pleth = rd.Samples(150452, 125.0, (0.5,) * 12, "MDC_DIM_DIMLESS", True, T_US)
    out = m.feed(ecg, NOW) + m.feed(ecg, NOW) + m.feed(pleth, NOW)
    w1, w2, p = out
    assert isinstance(w1, Waveform) and isinstance(w2, Waveform) and isinstance(p, Waveform)
    assert (w1.signal, w1.sample_rate, w1.first_seq, w2.first_seq) == ("II", 500, 0, 50)
    assert [round(s * w1.scale, 6) for s in w1.samples] == [i / 1000 for i in range(50)]
    assert (p.signal, p.sample_rate, p.unit, p.samples[0] * p.scale) == (
        "PLETH",
        125,
        "1",
        pytest.approx(0.5),
    )


def test_waveform_microvolts_large_values_and_long_runs() -> None:
    m = mapper()
    uv = rd.Samples(131329, 1000.0, (1000.0, -50000.0), "uV", True, T_US)
    (w,) = m.feed(uv, NOW)
    assert isinstance(w, Waveform) and w.signal == "I"
    assert w.samples[1] * w.scale == pytest.approx(-50.0, rel=1e-4)  # rescaled, not clipped
    long = rd.Samples(150452, 100.0, (1.0,) * 5000, "1", True, T_US)
    a, b = m.feed(long, NOW)
    assert isinstance(a, Waveform) and isinstance(b, Waveform)
    assert len(a.samples) + len(b.samples) == 5000 and b.first_seq == a.seq_end()


def test_waveforms_the_codec_cannot_carry_are_counted() -> None:
    m = mapper()
    assert m.feed(rd.Samples(150452, 250.0, (1.0,), "1", True, T_US), NOW) == []
    assert m.feed(rd.Samples(151804, 62.5, (1.0,), "1", True, T_US), NOW) == []
    assert m.counts["waveform-rate"] == 1 and m.counts["waveform-unmapped"] == 1


def test_device_alerts_forwarded_with_their_priority_not_escalated() -> None:
    m = mapper()
    up = rd.DeviceAlert("spo2.lo", 150456, rd.Priority.MEDIUM, True, "SpO2 low", T_US)
    (a,) = m.feed(up, NOW)
    assert isinstance(a, Alarm)
    assert a.category is AlarmCategory.DEVICE_PHYSIOLOGICAL
    assert (a.priority, a.state, a.condition) == (Priority.MEDIUM, AlarmState.ACTIVE, "dev-spo2.lo")
    assert m.feed(up, NOW + 1) == []  # the same report again
    assert m.engine.tick(NOW + 3600) == []  # the device owns its priority
    (hi,) = m.feed(rd.DeviceAlert("spo2.lo", 150456, rd.Priority.HIGH, True, "", T_US), NOW)
    assert isinstance(hi, Alarm) and hi.priority is Priority.HIGH and hi.alarm_id == a.alarm_id
    (end,) = m.feed(rd.DeviceAlert("spo2.lo", 150456, rd.Priority.HIGH, False, "", T_US), NOW)
    assert isinstance(end, Alarm) and end.state is AlarmState.CLEARED
    tech = rd.DeviceAlert("LeadOff", None, rd.Priority.LOW, True, "", T_US, technical=True)
    (t,) = m.feed(tech, NOW)
    assert isinstance(t, Alarm) and t.category is AlarmCategory.DEVICE_TECHNICAL
    assert m.feed(rd.DeviceAlert("never-raised", None, rd.Priority.LOW, False, "", None), NOW) == []


def test_alert_condition_codes_fit_and_do_not_collide() -> None:
    assert alert_condition("spo2.lo") == "dev-spo2.lo"
    long_a, long_b = "x" * 40 + "a", "x" * 40 + "b"
    codes = {alert_condition(k) for k in ("A/B", "a-b", "a_b", long_a, long_b)}
    assert len(codes) == 5
    for c in codes:
        codec.Alarm(
            1, Priority.LOW, AlarmState.ACTIVE, AlarmCategory.DEVICE_TECHNICAL, 0, None, c, "p"
        )


def test_device_identity_lost_and_back() -> None:
    m = mapper()
    info = rd.DeviceInfo("hl7", "MON-1", model="VS-9", serial="SN42", patient_id="PID-7")
    (st,) = m.feed(info, NOW)
    assert isinstance(st, DeviceStatus) and st.state is DeviceState.CONNECTED
    assert (st.device_id, st.model, st.patient_reported) == ("MON-1", "VS-9", "PID-7")
    feed_all(m, [metric(147842, 72, "/min")])
    lost = m.feed(rd.DeviceLost("no message for 4 s"), NOW + 5)
    st_lost, alarm = lost
    assert isinstance(st_lost, DeviceStatus) and st_lost.state is DeviceState.LOST
    assert isinstance(alarm, Alarm) and alarm.condition == DISCONNECTED
    assert alarm.category is AlarmCategory.TECHNICAL and alarm.priority is Priority.HIGH
    back = m.feed(metric(147842, 70, "/min"), NOW + 6)
    assert [type(x) for x in back] == [DeviceStatus, Alarm]
    assert isinstance(back[1], Alarm) and back[1].condition == DISCONNECTED
    assert back[1].state is not AlarmState.ACTIVE  # latched (HIGH) or cleared


def test_other_patient_raises_high_alarm_and_withholds_data() -> None:
    m = mapper(expected="PID-7")
    out = m.feed(rd.DeviceInfo("hl7", "MON-1", patient_id="PID-9"), NOW)
    (alarm,) = only(out, Alarm)
    assert alarm.condition == MISMATCH and alarm.priority is Priority.HIGH
    assert alarm.category is AlarmCategory.TECHNICAL
    assert feed_all(m, [metric(147842, 72, "/min")]) == []
    assert m.counts["withheld-patient-mismatch"] == 1
    out = m.feed(rd.DeviceInfo("hl7", "MON-1", patient_id="PID-7"), NOW + 1)
    assert only(out, Alarm)[0].condition == MISMATCH
    assert only(feed_all(m, [metric(147842, 72, "/min")], NOW + 1), Numerics)


def test_convert() -> None:
    assert convert(100.0, "[degF]") == (pytest.approx(37.777, abs=0.001), "Cel")
    assert convert(1.0, "nonsense") is None
