"""Device readings -> vitals codec messages: the one MDC table (code -> codec -> FHIR).

Sans-IO: `now` is float seconds (Unix time). What goes where:

- HR, SpO2, NIBP systolic/diastolic, temperature and respiration rate -> NUMERICS (units
  converted: kPa -> mmHg, degF -> degC, ...). NUMERICS is the device's current display: a
  value stays in it until it is `STALE_S[param]` old or the device flags it invalid.
- every other numeric (pulse rate, NIBP mean, ABP, any unknown MDC code), a NUMERICS
  parameter the device flagged invalid, and one whose unit has no known conversion ->
  METRIC with its MDC code: carried, never dropped. Invalid values are flagged there and
  never reach the alarm engine.
- ECG leads and pleth -> WAVEFORM at their real sample rate (the codec's limits: ECG
  250..1000 Hz, pleth 100..125 Hz); anything else is counted, not sent.
- device alert conditions -> ALARM, category DEVICE_*, IEC priority as the device says.
- device identity -> DEVICE; a device reporting another patient than `expected_patient`
  -> HIGH technical alarm `device-patient-mismatch`, and its data are withheld (counted)
  until it reports the right patient again.
- device lost -> DEVICE (LOST) and technical alarm `device-disconnected`, cleared when it
  reports again.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass

from p2pmed.devices import reading as rd
from p2pmed.vitals import codec
from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import (
    Alarm,
    DeviceMetric,
    DeviceState,
    DeviceStatus,
    Message,
    MetricFlags,
    Numerics,
    Param,
    Priority,
    Waveform,
)
from p2pmed.vitals.ranges import mark_suspect


@dataclass(frozen=True)
class Mdc:
    code: int
    label: str  # MDC reference id
    ucum: str  # the unit it is carried in
    param: Param | None = None  # its NUMERICS field, if any
    loinc: str = ""  # for the FHIR export


# The MDC -> codec -> FHIR table (docs/devices.md shows it).
METRICS: dict[int, Mdc] = {
    m.code: m
    for m in (
        Mdc(147842, "MDC_ECG_HEART_RATE", "/min", Param.HR, "8867-4"),
        Mdc(150456, "MDC_PULS_OXIM_SAT_O2", "%", Param.SPO2, "59408-5"),
        Mdc(149530, "MDC_PULS_OXIM_PULS_RATE", "/min", None, "8889-8"),
        Mdc(150301, "MDC_PRESS_BLD_NONINV_SYS", "mm[Hg]", Param.SYS, "8480-6"),
        Mdc(150302, "MDC_PRESS_BLD_NONINV_DIA", "mm[Hg]", Param.DIA, "8462-4"),
        Mdc(150303, "MDC_PRESS_BLD_NONINV_MEAN", "mm[Hg]", None, "8478-0"),
        Mdc(150033, "MDC_PRESS_BLD_ART_ABP_SYS", "mm[Hg]", None, "76215-3"),
        Mdc(150034, "MDC_PRESS_BLD_ART_ABP_DIA", "mm[Hg]", None, "76213-8"),
        Mdc(150035, "MDC_PRESS_BLD_ART_ABP_MEAN", "mm[Hg]", None, "76214-6"),
        Mdc(150344, "MDC_TEMP", "Cel", Param.TEMP, "8310-5"),
        Mdc(150364, "MDC_TEMP_BODY", "Cel", Param.TEMP, "8310-5"),
        Mdc(151562, "MDC_RESP_RATE", "/min", Param.RR, "9279-1"),
    )
}
ECG_BASE = 131328  # MDC_ECG_ELEC_POTL_<lead> = 131328 + MDC lead number
_LEADS = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8}
_LEADS |= {"III": 61, "aVR": 62, "aVL": 63, "aVF": 64}
WAVES: dict[int, str] = {ECG_BASE + n: lead for lead, n in _LEADS.items()}
WAVES[150452] = codec.PLETH  # MDC_PULS_OXIM_PLETH

# unit as a device gives it (UCUM, MDC reference id or MDC unit code) -> (UCUM, factor, offset)
_KPA_TO_MMHG = 7.500616827
_UNIT_GROUPS: tuple[tuple[tuple[str, ...], tuple[str, float, float]], ...] = (
    (("mm[Hg]", "mmHg", "MDC_DIM_MMHG", "266016"), ("mm[Hg]", 1.0, 0.0)),
    (("kPa", "MDC_DIM_KILO_PASCAL", "265987"), ("mm[Hg]", _KPA_TO_MMHG, 0.0)),
    (("Cel", "degC", "MDC_DIM_DEGC", "268192"), ("Cel", 1.0, 0.0)),
    (("[degF]", "degF", "MDC_DIM_FAHR", "266560"), ("Cel", 5 / 9, -32 * 5 / 9)),
    (("%", "MDC_DIM_PERCENT", "262688"), ("%", 1.0, 0.0)),
    (("/min", "{beats}/min", "{beat}/min", "MDC_DIM_BEAT_PER_MIN", "264864"), ("/min", 1.0, 0.0)),
    (("{breaths}/min", "{breath}/min", "MDC_DIM_RESP_PER_MIN", "264928"), ("/min", 1.0, 0.0)),
    (("mV", "MDC_DIM_MILLI_VOLT", "266418"), ("mV", 1.0, 0.0)),
    (("uV", "MDC_DIM_MICRO_VOLT", "266419"), ("mV", 0.001, 0.0)),
    (("1", "MDC_DIM_DIMLESS", "262656"), ("1", 1.0, 0.0)),
)
UNITS: dict[str, tuple[str, float, float]] = {a: u for names, u in _UNIT_GROUPS for a in names}

# seconds a NUMERICS value stays current without a new report (NIBP and temperature are
# measured now and then, the others continuously)
STALE_S: dict[Param, float] = {
    Param.HR: 10.0,
    Param.SPO2: 10.0,
    Param.RR: 10.0,
    Param.SYS: 1800.0,
    Param.DIA: 1800.0,
    Param.TEMP: 1800.0,
}
_PRIORITY = {rd.Priority.HIGH: Priority.HIGH, rd.Priority.MEDIUM: Priority.MEDIUM}
_PRIORITY[rd.Priority.LOW] = Priority.LOW
DISCONNECTED = "device-disconnected"
MISMATCH = "device-patient-mismatch"
_ECG_SCALE = 0.001  # mV per LSB, as the synthetic source
_PLETH_SCALE = 0.001


def convert(value: float, unit: str) -> tuple[float, str] | None:
    """(value, UCUM unit) after conversion, or None for a unit without a known conversion."""
    u = UNITS.get(unit.strip())
    if u is None:
        return None
    ucum, factor, offset = u
    return value * factor + offset, ucum


def _printable(text: str, limit: int) -> str:
    return re.sub(r"[^\x21-\x7e]", "_", text)[:limit]


def alert_condition(key: str) -> str:
    """The ALARM condition code of a device alert: `dev-` and its key, made to fit the
    codec's [a-z0-9][a-z0-9._-]{0,31}; a key that does not fit as it is gets a checksum so
    that two alerts never share a code."""
    clean = re.sub(r"[^a-z0-9._-]", "-", key.lower())
    code = f"dev-{clean}"
    if code.lower() != f"dev-{key}".lower() or len(code) > 32:
        code = f"dev-{clean[:19]}-{zlib.crc32(key.encode()):08x}"
    return code


def _f32_at_least(x: float) -> float:
    """Smallest float32 >= x (a waveform scale that still fits the largest sample)."""
    f = struct.unpack(">f", struct.pack(">f", x))[0]
    if f < x:
        f = struct.unpack(
            ">f", struct.pack(">I", struct.unpack(">I", struct.pack(">f", f))[0] + 1)
        )[0]
    return float(f)


class DeviceMapper:
    """Turns one device's readings into codec messages for one patient."""

    def __init__(
        self, patient_id: str, engine: AlarmEngine, expected_patient: str | None = None
    ) -> None:
        self.patient_id = patient_id
        self.engine = engine
        self.expected_patient = expected_patient
        self.counts: Counter[str] = Counter()  # what could not go out as reported, by reason
        self.device: rd.DeviceInfo | None = None
        self.mismatch = False
        self.lost = False
        self._values: dict[Param, tuple[float, int, float]] = {}  # value, time_us, arrived
        self._pending = False
        self._seq: dict[str, int] = {}

    def feed(self, r: rd.Reading, now: float) -> list[Message]:
        """Messages for one reading (NUMERICS values wait for flush())."""
        if isinstance(r, rd.DeviceLost):
            return self._lost(r, now)
        if isinstance(r, rd.DeviceInfo):
            return self._info(r, now)
        out = self._back(now) if self.lost else []
        if self.mismatch:
            self.counts["withheld-patient-mismatch"] += 1
            return out
        if isinstance(r, rd.Metric):
            return out + self._metric(r, now)
        if isinstance(r, rd.Samples):
            return out + self._samples(r, now)
        return out + self._alert(r, now)

    def flush(self, now: float) -> list[Message]:
        """A NUMERICS of the current values, if any changed since the last flush."""
        if not self._pending:
            return []
        self._pending = False
        fresh = {p: v for p, v in self._values.items() if now - v[2] <= STALE_S[p]}
        if not fresh:
            return []
        t_us = max(v[1] for v in fresh.values())
        values: dict[Param, float | None] = {p: v[0] for p, v in fresh.items()}
        return [mark_suspect(Numerics.from_values(t_us, self.patient_id, values))]

    # -- numerics -----------------------------------------------------------------------

    def _metric(self, m: rd.Metric, now: float) -> list[Message]:
        t_us = m.time_us if m.time_us is not None else _us(now)
        known = METRICS.get(m.code)
        if not math.isfinite(m.value):
            self.counts["metric-not-finite"] += 1  # the one thing the codec cannot carry
            return []
        conv = convert(m.value, m.unit)
        if known is not None and conv is not None and conv[1] != known.ucum:
            self.counts["metric-unit-mismatch"] += 1
            conv = None
        param = known.param if known is not None and conv is not None else None
        if param is not None and conv is not None and m.valid:
            raw = conv[0] / codec.SCALE[param]
            if 0 <= round(raw) < codec.ABSENT:
                self._values[param] = (conv[0], t_us, now)
                self._pending = True
                return []
            self.counts["metric-out-of-field"] += 1
        if param is not None and not m.valid and self._values.pop(param, None) is not None:
            self._pending = True  # an invalid value takes the old one off the display
        if known is None:
            self.counts["metric-unmapped"] += 1
        elif conv is None:
            self.counts["metric-unit-unknown"] += 1
        value, unit = conv if conv is not None else (m.value, _printable(m.unit, 32) or "1")
        label = _printable(m.label, 64) or (known.label if known is not None else "")
        flags = MetricFlags.NONE if m.valid else MetricFlags.INVALID
        return [DeviceMetric(t_us, m.code, value, flags, unit, label, self.patient_id)]

    # -- waveforms ----------------------------------------------------------------------

    def _samples(self, s: rd.Samples, now: float) -> list[Message]:
        signal = WAVES.get(s.code)
        if signal is None:
            self.counts["waveform-unmapped"] += 1
            return []
        rate = round(s.rate_hz)
        lo, hi = codec.rate_limits(signal)
        if not (abs(rate - s.rate_hz) < 1e-6 and lo <= rate <= hi):
            self.counts["waveform-rate"] += 1
            return []
        if not s.values:
            return []
        if not s.valid:
            self.counts["waveform-invalid"] += 1  # sent: never used for alarms anyway
        if signal == codec.PLETH:
            values, unit, scale = list(s.values), _printable(s.unit, 8) or "1", _PLETH_SCALE
            conv = convert(0.0, s.unit)
            if conv is not None and len(conv[1]) <= 8:
                unit = conv[1]
        else:
            conv = convert(0.0, s.unit)
            if conv is None or conv[1] != "mV":
                self.counts["waveform-unit"] += 1
                return []
            factor = UNITS[s.unit.strip()][1]
            values, unit, scale = [v * factor for v in s.values], "mV", _ECG_SCALE
        if not all(math.isfinite(v) for v in values):
            self.counts["waveform-not-finite"] += 1
            return []
        peak = max(abs(v) for v in values)
        if peak / scale > 32767:
            scale = _f32_at_least(peak / 32767)
        t0 = s.time_us if s.time_us is not None else _us(now - len(values) / rate)
        out: list[Message] = []
        for a in range(0, len(values), codec.MAX_SAMPLES):
            chunk = values[a : a + codec.MAX_SAMPLES]
            seq = self._seq.get(signal, 0)
            samples = tuple(max(-32768, min(32767, round(v / scale))) for v in chunk)
            t = t0 + round(a * 1_000_000 / rate)
            out.append(Waveform(signal, rate, t, seq, scale, unit, samples))
            self._seq[signal] = seq + len(samples)
        return out

    # -- alarms, identity, loss ---------------------------------------------------------

    def _alert(self, a: rd.DeviceAlert, now: float) -> list[Message]:
        prio = _PRIORITY[a.priority]
        code = alert_condition(a.key)
        return list(self.engine.device_alert(code, a.active, now, prio, technical=a.technical))

    def _info(self, info: rd.DeviceInfo, now: float) -> list[Message]:
        out = self._back(now) if self.lost else []
        self.device = info
        out.append(self._status(DeviceState.CONNECTED, now))
        reported = info.patient_id
        if self.expected_patient is not None and reported and reported != self.expected_patient:
            if not self.mismatch:
                self._values.clear()
            self.mismatch = True
            out += self.engine.raise_technical(MISMATCH, now, Priority.HIGH)
        elif self.mismatch:
            self.mismatch = False
            out += self.engine.clear_technical(MISMATCH, now)
        return out

    def _lost(self, r: rd.DeviceLost, now: float) -> list[Message]:
        self.lost = True
        self._values.clear()
        out: list[Message] = []
        if self.device is not None:
            out.append(self._status(DeviceState.LOST, now))
        alarms: list[Alarm] = self.engine.raise_technical(DISCONNECTED, now, Priority.HIGH)
        return out + list(alarms)

    def _back(self, now: float) -> list[Message]:
        self.lost = False
        out: list[Message] = []
        if self.device is not None:
            out.append(self._status(DeviceState.CONNECTED, now))
        return out + list(self.engine.clear_technical(DISCONNECTED, now))

    def status(self, now: float) -> DeviceStatus | None:
        """The device's current status (for a clinician who joins), None before it said."""
        if self.device is None:
            return None
        return self._status(DeviceState.LOST if self.lost else DeviceState.CONNECTED, now)

    def _status(self, state: DeviceState, now: float) -> DeviceStatus:
        d = self.device
        assert d is not None

        def text(s: str, limit: int) -> str:
            s = "".join(c for c in s if c.isprintable())
            while len(s.encode()) > limit:
                s = s[:-1]
            return s

        return DeviceStatus(
            _us(now),
            state,
            re.sub(r"[^a-z0-9-]", "-", d.protocol.lower())[:16] or "unknown",
            text(d.device_id, 255) or "unknown",
            text(d.model, 64),
            text(d.serial, 64),
            text(d.manufacturer, 64),
            text(d.patient_id or "", 64),
        )


def _us(now: float) -> int:
    return max(0, round(now * 1_000_000))
