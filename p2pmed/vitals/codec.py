"""Application message codec: the `data` bytes of session DATA messages.

Byte layout is specified in docs/protocol.md section 7; keep the two in step.
Every message starts with `kind (u8) || version (u8)`. All integers are big-endian,
all fields have a fixed size or a u8 length prefix; no varints, no padding.

`decode` accepts any bytes and returns a message or raises CodecError(reason);
every constructor validates its fields and raises CodecError as well, so an invalid
message object can not exist and `encode` never produces bytes `decode` rejects.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from p2pmed.core.errors import CodecError

VERSION = 1
MAX_MESSAGE = 16 * 1024  # one session chunk
MAX_SAMPLES = 4096
MAX_ID = 64
MAX_TEXT = 255
MAX_SUBJECT = 255
MAX_HR_SOURCE = 32
ABSENT = 0xFFFF  # u16 sentinel for "no value" in NUMERICS and limits
U64 = (1 << 64) - 1


class Kind(enum.IntEnum):
    NUMERICS = 0x01
    WAVEFORM = 0x02
    ALARM = 0x03
    ALARM_ACK = 0x04
    CONTROL = 0x05
    METRIC = 0x06
    DEVICE = 0x07


class Param(enum.IntEnum):
    """Numeric parameters, in NUMERICS field order. Values are fixed-point (see SCALE)."""

    HR = 1  # heart rate, 0.1 /min
    SYS = 2  # systolic pressure, 0.1 mmHg
    DIA = 3  # diastolic pressure, 0.1 mmHg
    SPO2 = 4  # oxygen saturation, 0.01 %
    TEMP = 5  # body temperature, 0.01 degC
    RR = 6  # respiratory rate, 0.1 /min


SCALE: dict[Param, float] = {
    Param.HR: 0.1,
    Param.SYS: 0.1,
    Param.DIA: 0.1,
    Param.SPO2: 0.01,
    Param.TEMP: 0.01,
    Param.RR: 0.1,
}
FIELD_NAME: dict[Param, str] = {
    Param.HR: "hr_x10",
    Param.SYS: "sys_x10",
    Param.DIA: "dia_x10",
    Param.SPO2: "spo2_x100",
    Param.TEMP: "temp_x100",
    Param.RR: "rr_x10",
}


class StatusFlags(enum.IntFlag):
    NONE = 0
    CRITICAL = 0x0001
    SENSOR_FAULT = 0x0002
    LOW_BATTERY = 0x0004
    SUSPECT_HR = 0x0100
    SUSPECT_SYS = 0x0200
    SUSPECT_DIA = 0x0400
    SUSPECT_SPO2 = 0x0800
    SUSPECT_TEMP = 0x1000
    SUSPECT_RR = 0x2000


VALID_FLAGS = 0x3F07


def suspect_flag(param: Param) -> StatusFlags:
    return StatusFlags(0x0100 << (param - 1))


# each parameter with its field and suspect bit, for the checks every NUMERICS runs
_PARAMS = tuple((p, FIELD_NAME[p], int(suspect_flag(p))) for p in Param)


class Priority(enum.IntEnum):
    """IEC 60601-1-8 alarm priorities."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


class AlarmState(enum.IntEnum):
    ACTIVE = 0
    LATCHED = 1  # condition gone, alarm stays until acknowledged
    ESCALATED = 2  # nobody acknowledged in time; priority was raised
    CLEARED = 3


class AlarmCategory(enum.IntEnum):
    PHYSIOLOGICAL = 0
    TECHNICAL = 1
    DEVICE_PHYSIOLOGICAL = 2  # a bedside device's own alert condition, forwarded
    DEVICE_TECHNICAL = 3


DEVICE_CATEGORIES = frozenset({AlarmCategory.DEVICE_PHYSIOLOGICAL, AlarmCategory.DEVICE_TECHNICAL})


class Command(enum.IntEnum):
    START_STREAM = 1
    STOP_STREAM = 2
    SET_ALARM_LIMIT = 3
    PING_TEXT = 4
    PATIENT_STATUS = 5  # patient -> clinician; its own message class, PatientStatus


class Stream(enum.IntEnum):
    """PATIENT_STATUS stream state. ENDED: the source has no more data, the link stays up."""

    STREAMING = 0
    ENDED = 1


ECG_LEADS = frozenset(
    {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6", "MLII", "MLIII"}
)
PLETH = "PLETH"


def rate_limits(signal: str) -> tuple[int, int]:
    """Allowed sample rates (Hz, inclusive) of a signal; CodecError for unknown signals."""
    if signal in ECG_LEADS:
        return 250, 1000
    if signal == PLETH:
        return 100, 125
    raise CodecError("signal", f"unknown signal {signal!r}")


_ENDPOINT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CODE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_UNIT_RE = re.compile(r"[\x21-\x7e]{1,8}")
_SUBJECT_RE = re.compile(r"[\x21-\x7e]{0,255}")  # MAX_SUBJECT
_HR_SOURCE_RE = re.compile(r"[a-z0-9-]{0,32}")  # MAX_HR_SOURCE
_METRIC_UNIT_RE = re.compile(r"[\x21-\x7e]{1,32}")
_METRIC_LABEL_RE = re.compile(r"[\x21-\x7e]{0,64}")
_PROTOCOL_RE = re.compile(r"[a-z0-9-]{1,16}")
MAX_DEVICE_ID = 255
MAX_DEVICE_TEXT = 64


def _check(cond: bool, reason: str, detail: str = "") -> None:
    if not cond:
        raise CodecError(reason, detail)


def _check_u64(value: int, reason: str) -> None:
    _check(isinstance(value, int) and 0 <= value <= U64, reason, "must be a u64")


_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_text(text: str, reason: str, max_bytes: int, min_bytes: int = 1) -> bytes:
    _check(isinstance(text, str), reason, "must be str")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError(reason, "not encodable as UTF-8") from exc
    if not min_bytes <= len(raw) <= max_bytes:
        raise CodecError(reason, f"{len(raw)} bytes")
    _check(_CONTROL_RE.search(text) is None, reason, "control character")
    return raw


def _check_match(pattern: re.Pattern[str], text: str, reason: str) -> None:
    if not isinstance(text, str) or pattern.fullmatch(text) is None:
        raise CodecError(reason, repr(text))


@dataclass(frozen=True)
class Numerics:
    """One set of numerics. Values are fixed-point ints (see Param) or None when absent."""

    timestamp_us: int
    patient_id: str
    hr_x10: int | None = None
    sys_x10: int | None = None
    dia_x10: int | None = None
    spo2_x100: int | None = None
    temp_x100: int | None = None
    rr_x10: int | None = None
    flags: StatusFlags = StatusFlags.NONE

    def __post_init__(self) -> None:
        _check_u64(self.timestamp_us, "timestamp")
        _check_text(self.patient_id, "patient", MAX_ID)
        for p, name, _ in _PARAMS:
            v = getattr(self, name)
            if not (v is None or (isinstance(v, int) and 0 <= v < ABSENT)):
                raise CodecError("value", f"{p.name} must be None or 0..65534")
        f = int(self.flags)
        _check(0 <= f <= 0xFFFF and f & ~VALID_FLAGS == 0, "flags", "undefined flag bits")
        for p, name, suspect in _PARAMS:
            if f & suspect and getattr(self, name) is None:
                raise CodecError("flags", f"suspect bit on absent {p.name}")
        object.__setattr__(self, "flags", StatusFlags(f))

    def raw(self, param: Param) -> int | None:
        v: int | None = getattr(self, FIELD_NAME[param])
        return v

    def value(self, param: Param) -> float | None:
        """The value in its physical unit (/min, mmHg, %, degC), or None."""
        v = self.raw(param)
        return None if v is None else round(v * SCALE[param], 2)

    def suspect(self, param: Param) -> bool:
        return bool(self.flags & suspect_flag(param))

    @classmethod
    def from_values(
        cls,
        timestamp_us: int,
        patient_id: str,
        values: dict[Param, float | None],
        flags: StatusFlags = StatusFlags.NONE,
    ) -> Numerics:
        """Build from physical values, rounding each to its fixed-point unit."""
        kw: dict[str, int | None] = {}
        for p, v in values.items():
            if v is None:
                kw[FIELD_NAME[p]] = None
            else:
                _check(math.isfinite(v), "value", f"{p.name} not finite")
                kw[FIELD_NAME[p]] = round(v / SCALE[p])
        return cls(timestamp_us, patient_id, flags=flags, **kw)


@dataclass(frozen=True)
class Waveform:
    signal: str
    sample_rate: int
    t0_us: int
    first_seq: int
    scale: float  # physical units per LSB; float32 on the wire
    unit: str
    samples: tuple[int, ...] = field(repr=False)

    def __post_init__(self) -> None:
        _check(isinstance(self.signal, str) and len(self.signal) <= 16, "signal", "bad id")
        lo, hi = rate_limits(self.signal)
        _check(
            isinstance(self.sample_rate, int) and lo <= self.sample_rate <= hi,
            "rate",
            f"{self.signal} needs {lo}..{hi} Hz",
        )
        _check_u64(self.t0_us, "timestamp")
        _check_u64(self.first_seq, "seq")
        _check(
            isinstance(self.first_seq, int) and self.first_seq + len(self.samples) - 1 <= U64,
            "seq",
            "sample seq overflows u64",
        )
        _check(
            isinstance(self.scale, float) and math.isfinite(self.scale) and self.scale > 0,
            "scale",
            "scale must be a finite float > 0",
        )
        f32 = struct.unpack(">f", struct.pack(">f", self.scale))[0]
        _check(f32 > 0 and math.isfinite(f32), "scale", "scale not representable as float32")
        object.__setattr__(self, "scale", f32)
        _check_match(_UNIT_RE, self.unit, "unit")
        raw = self.samples
        samples = tuple(raw.tolist() if hasattr(raw, "tolist") else raw)  # numpy arrays too
        _check(1 <= len(samples) <= MAX_SAMPLES, "count", f"{len(samples)} samples")
        _check(
            all(type(s) is int and -32768 <= s <= 32767 for s in samples),
            "sample",
            "samples must be int16",
        )
        object.__setattr__(self, "samples", samples)

    def seq_end(self) -> int:
        """Sample seq just after the last sample of this chunk."""
        return self.first_seq + len(self.samples)


@dataclass(frozen=True)
class Alarm:
    alarm_id: int
    priority: Priority
    state: AlarmState
    category: AlarmCategory
    time_us: int
    value: float | None  # NaN on the wire when None
    condition: str
    patient_id: str

    def __post_init__(self) -> None:
        _check_u64(self.alarm_id, "alarm-id")
        _check(self.priority in set(Priority), "priority", repr(self.priority))
        _check(self.state in set(AlarmState), "state", repr(self.state))
        _check(self.category in set(AlarmCategory), "category", repr(self.category))
        object.__setattr__(self, "priority", Priority(self.priority))
        object.__setattr__(self, "state", AlarmState(self.state))
        object.__setattr__(self, "category", AlarmCategory(self.category))
        _check_u64(self.time_us, "timestamp")
        if self.value is not None:
            _check(
                isinstance(self.value, (int, float)) and math.isfinite(self.value),
                "value",
                "alarm value must be finite or None",
            )
            object.__setattr__(self, "value", float(self.value))
        _check_match(_CODE_RE, self.condition, "condition")
        _check_text(self.patient_id, "patient", MAX_ID)


@dataclass(frozen=True)
class AlarmAck:
    alarm_id: int
    time_us: int
    who: str  # endpoint id of the acknowledging clinician

    def __post_init__(self) -> None:
        _check_u64(self.alarm_id, "alarm-id")
        _check_u64(self.time_us, "timestamp")
        _check_match(_ENDPOINT_RE, self.who, "who")


@dataclass(frozen=True)
class Control:
    """A command. Which fields are used depends on `command`; unused ones must stay default.

    START_STREAM / STOP_STREAM: `signal` ("" = all signals).
    SET_ALARM_LIMIT: `rule` (alarm rule code) and `limit` (float, physical unit; None clears).
    PING_TEXT: `text` (0..255 UTF-8 bytes, no control characters).
    """

    command: Command
    request_id: int
    signal: str = ""
    rule: str = ""
    limit: float | None = None
    text: str = ""

    def __post_init__(self) -> None:
        _check(self.command in set(Command), "command", repr(self.command))
        cmd = Command(self.command)
        _check(cmd is not Command.PATIENT_STATUS, "command", "PATIENT_STATUS is a PatientStatus")
        object.__setattr__(self, "command", cmd)
        _check(
            isinstance(self.request_id, int) and 0 <= self.request_id <= 0xFFFFFFFF,
            "request-id",
            "must be a u32",
        )
        used = {
            Command.START_STREAM: {"signal"},
            Command.STOP_STREAM: {"signal"},
            Command.SET_ALARM_LIMIT: {"rule", "limit"},
            Command.PING_TEXT: {"text"},
        }[cmd]
        for name, default in (("signal", ""), ("rule", ""), ("limit", None), ("text", "")):
            if name not in used:
                _check(getattr(self, name) == default, "field", f"{name} not used by {cmd.name}")
        if cmd in (Command.START_STREAM, Command.STOP_STREAM) and self.signal != "":
            rate_limits(self.signal)
        if cmd is Command.SET_ALARM_LIMIT:
            _check_match(_CODE_RE, self.rule, "rule")
            if self.limit is not None:
                _check(
                    isinstance(self.limit, (int, float)) and math.isfinite(self.limit),
                    "limit",
                    "limit must be finite or None",
                )
                object.__setattr__(self, "limit", float(self.limit))
        if cmd is Command.PING_TEXT:
            _check_text(self.text, "text", MAX_TEXT, min_bytes=0)


@dataclass(frozen=True)
class PatientStatus:
    """CONTROL command 5, patient -> clinician: what the patient tells each clinician about
    itself, sent on class HIGH when a session is established and again on every change; a
    later status replaces an earlier one.

    request_id: the sender's status counter (informational).
    stream: STREAMING, or ENDED (the recording is over; the link is still up).
    label: 0..255 UTF-8 bytes, no control characters; "" = no label.
    subject: FHIR reference of the patient, 0..255 bytes of ASCII 0x21..0x7E;
        "" = "Patient/<sender's endpoint id>".
    hr_source: 0..32 bytes of [a-z0-9-] ("synthetic", "annotations", "ecg-detector");
        "" = the source has no HR.
    """

    command: ClassVar[Command] = Command.PATIENT_STATUS
    request_id: int = 0
    stream: Stream = Stream.STREAMING
    label: str = ""
    subject: str = ""
    hr_source: str = ""

    def __post_init__(self) -> None:
        _check(
            isinstance(self.request_id, int) and 0 <= self.request_id <= 0xFFFFFFFF,
            "request-id",
            "must be a u32",
        )
        _check(self.stream in set(Stream), "stream", repr(self.stream))
        object.__setattr__(self, "stream", Stream(self.stream))
        _check_text(self.label, "label", MAX_TEXT, min_bytes=0)
        _check_match(_SUBJECT_RE, self.subject, "subject")
        _check_match(_HR_SOURCE_RE, self.hr_source, "hr-source")


class MetricFlags(enum.IntFlag):
    NONE = 0
    INVALID = 0x01  # the device says the value is not valid: show it flagged, never alarm on it


VALID_METRIC_FLAGS = 0x01


@dataclass(frozen=True)
class DeviceMetric:
    """One numeric a bedside device reported that NUMERICS has no field for (pulse rate,
    mean and arterial pressures, any other MDC metric), or one the device flagged invalid.

    code: IEEE 11073-10101 MDC code (u32). unit: UCUM after conversion, or the device's own
    unit id when it has no known conversion. label: the device's reference id
    (e.g. MDC_PULS_OXIM_PULS_RATE), may be empty.
    """

    time_us: int
    code: int
    value: float
    flags: MetricFlags
    unit: str
    label: str
    patient_id: str

    def __post_init__(self) -> None:
        _check_u64(self.time_us, "timestamp")
        _check(isinstance(self.code, int) and 0 <= self.code <= 0xFFFFFFFF, "code", "must be a u32")
        _check(
            isinstance(self.value, (int, float)) and math.isfinite(self.value),
            "value",
            "metric value must be finite",
        )
        object.__setattr__(self, "value", float(self.value))
        f = int(self.flags)
        _check(0 <= f <= 0xFF and f & ~VALID_METRIC_FLAGS == 0, "flags", "undefined flag bits")
        object.__setattr__(self, "flags", MetricFlags(f))
        _check_match(_METRIC_UNIT_RE, self.unit, "unit")
        _check_match(_METRIC_LABEL_RE, self.label, "label")
        _check_text(self.patient_id, "patient", MAX_ID)

    @property
    def valid(self) -> bool:
        return not self.flags & MetricFlags.INVALID


class DeviceState(enum.IntEnum):
    CONNECTED = 0
    LOST = 1


@dataclass(frozen=True)
class DeviceStatus:
    """Which bedside device feeds this patient node, and which patient the device itself
    says it is attached to (patient_reported "" = it did not say). Sent when the device
    identifies itself and when it goes away (LOST)."""

    time_us: int
    state: DeviceState
    protocol: str  # "sdc" | "hl7"
    device_id: str
    model: str = ""
    serial: str = ""
    manufacturer: str = ""
    patient_reported: str = ""

    def __post_init__(self) -> None:
        _check_u64(self.time_us, "timestamp")
        _check(self.state in set(DeviceState), "state", repr(self.state))
        object.__setattr__(self, "state", DeviceState(self.state))
        _check_match(_PROTOCOL_RE, self.protocol, "protocol")
        _check_text(self.device_id, "device", MAX_DEVICE_ID)
        for name in ("model", "serial", "manufacturer", "patient_reported"):
            _check_text(getattr(self, name), "device", MAX_DEVICE_TEXT, min_bytes=0)


Message = (
    Numerics | Waveform | Alarm | AlarmAck | Control | PatientStatus | DeviceMetric | DeviceStatus
)

_NUM = struct.Struct(">6HH")
_WAVE_MID = struct.Struct(">HQQf")
_ALARM_MID = struct.Struct(">QBBBQ")
_ACK_MID = struct.Struct(">QQ")
_CTRL_MID = struct.Struct(">BI")
_METRIC_MID = struct.Struct(">QI")
_DEVICE_MID = struct.Struct(">QB")
_NAN = bytes.fromhex("7ff8000000000000")  # canonical quiet NaN = "no value"


def _short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def encode(msg: Message) -> bytes:
    if isinstance(msg, Numerics):
        vals = [ABSENT if msg.raw(p) is None else msg.raw(p) for p in Param]
        body = (
            struct.pack(">Q", msg.timestamp_us)
            + _short(msg.patient_id.encode())
            + _NUM.pack(*vals, int(msg.flags))
        )
        kind = Kind.NUMERICS
    elif isinstance(msg, Waveform):
        body = (
            _short(msg.signal.encode("ascii"))
            + _WAVE_MID.pack(msg.sample_rate, msg.t0_us, msg.first_seq, msg.scale)
            + _short(msg.unit.encode("ascii"))
            + struct.pack(f">H{len(msg.samples)}h", len(msg.samples), *msg.samples)
        )
        kind = Kind.WAVEFORM
    elif isinstance(msg, Alarm):
        value = _NAN if msg.value is None else struct.pack(">d", msg.value)
        body = (
            _ALARM_MID.pack(msg.alarm_id, msg.priority, msg.state, msg.category, msg.time_us)
            + value
            + _short(msg.condition.encode("ascii"))
            + _short(msg.patient_id.encode())
        )
        kind = Kind.ALARM
    elif isinstance(msg, AlarmAck):
        body = _ACK_MID.pack(msg.alarm_id, msg.time_us) + _short(msg.who.encode("ascii"))
        kind = Kind.ALARM_ACK
    elif isinstance(msg, PatientStatus):
        body = _CTRL_MID.pack(msg.command, msg.request_id) + bytes([msg.stream])
        for text in (msg.label, msg.subject, msg.hr_source):
            body += _short(text.encode())
        kind = Kind.CONTROL
    elif isinstance(msg, DeviceMetric):
        body = (
            _METRIC_MID.pack(msg.time_us, msg.code)
            + struct.pack(">dB", msg.value, int(msg.flags))
            + _short(msg.unit.encode("ascii"))
            + _short(msg.label.encode("ascii"))
            + _short(msg.patient_id.encode())
        )
        kind = Kind.METRIC
    elif isinstance(msg, DeviceStatus):
        body = _DEVICE_MID.pack(msg.time_us, msg.state) + _short(msg.protocol.encode("ascii"))
        for text in (msg.device_id, msg.model, msg.serial, msg.manufacturer):
            body += _short(text.encode())
        body += _short(msg.patient_reported.encode())
        kind = Kind.DEVICE
    elif isinstance(msg, Control):
        body = _CTRL_MID.pack(msg.command, msg.request_id)
        if msg.command in (Command.START_STREAM, Command.STOP_STREAM):
            body += _short(msg.signal.encode("ascii"))
        elif msg.command is Command.SET_ALARM_LIMIT:
            limit = _NAN if msg.limit is None else struct.pack(">d", msg.limit)
            body += _short(msg.rule.encode("ascii")) + limit
        else:
            body += _short(msg.text.encode())
        kind = Kind.CONTROL
    else:
        raise CodecError("kind", f"not a message: {type(msg).__name__}")
    return bytes([kind, VERSION]) + body


_KINDS = frozenset(Kind)
_NOT_PRINTABLE_RE = re.compile(b"[^\x20-\x7e]")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CodecError("truncated", f"need {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple[object, ...]:
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def short_bytes(self) -> bytes:
        return self.take(self.u8())

    def ascii(self, reason: str) -> str:
        raw = self.short_bytes()
        if _NOT_PRINTABLE_RE.search(raw) is not None:
            raise CodecError(reason, "not printable ASCII")
        return raw.decode("ascii")

    def utf8(self, reason: str) -> str:
        try:
            return self.short_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(reason, "invalid UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise CodecError("trailing", f"{len(self.data) - self.pos} bytes after the message")


def _f64(raw: bytes, reason: str) -> float | None:
    """Decode an optional float64: only the canonical NaN means None."""
    if raw == _NAN:
        return None
    (value,) = struct.unpack(">d", raw)
    if not math.isfinite(value):
        raise CodecError(reason, "non-finite float")
    assert isinstance(value, float)
    return value


def decode(data: bytes) -> Message:
    """Decode one application message; raises CodecError (and nothing else) on bad input."""
    try:
        return _decode(data)
    except CodecError:
        raise
    except Exception as exc:  # a decoder bug must still surface as a typed rejection
        raise CodecError("malformed", f"{type(exc).__name__}: {exc}") from exc


def _decode(data: bytes) -> Message:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("type", "data must be bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE:
        raise CodecError("oversized", f"{len(data)} > {MAX_MESSAGE} bytes")
    if len(data) < 2:
        raise CodecError("truncated", "shorter than kind + version")
    if data[0] not in _KINDS:
        raise CodecError("kind", f"unknown kind 0x{data[0]:02x}")
    if data[1] != VERSION:
        raise CodecError("version", f"unsupported version {data[1]}")
    kind = Kind(data[0])
    r = _Reader(data)
    r.pos = 2
    msg: Message
    if kind is Kind.NUMERICS:
        (ts,) = struct.unpack(">Q", r.take(8))
        pid = r.utf8("patient")
        *vals, flags = r.unpack(_NUM)
        kw = {FIELD_NAME[p]: (None if v == ABSENT else v) for p, v in zip(Param, vals, strict=True)}
        msg = Numerics(ts, pid, flags=flags, **kw)  # type: ignore[arg-type]
    elif kind is Kind.WAVEFORM:
        signal = r.ascii("signal")
        rate, t0, seq, scale = r.unpack(_WAVE_MID)
        unit = r.ascii("unit")
        (n,) = struct.unpack(">H", r.take(2))
        if not 1 <= n <= MAX_SAMPLES:
            raise CodecError("count", f"{n} samples")
        samples = struct.unpack(f">{n}h", r.take(2 * n))
        msg = Waveform(signal, rate, t0, seq, scale, unit, samples)  # type: ignore[arg-type]
    elif kind is Kind.ALARM:
        aid, prio, state, cat, t = r.unpack(_ALARM_MID)
        value = _f64(r.take(8), "value")
        condition = r.ascii("condition")
        pid = r.utf8("patient")
        msg = Alarm(aid, prio, state, cat, t, value, condition, pid)  # type: ignore[arg-type]
    elif kind is Kind.ALARM_ACK:
        aid, t = r.unpack(_ACK_MID)
        msg = AlarmAck(aid, t, r.ascii("who"))  # type: ignore[arg-type]
    elif kind is Kind.METRIC:
        t, code = r.unpack(_METRIC_MID)
        value = _f64(r.take(8), "value")
        flags = r.u8()
        unit = r.ascii("unit")
        label = r.ascii("label")
        pid = r.utf8("patient")
        if value is None:
            raise CodecError("value", "a metric needs a value")
        msg = DeviceMetric(t, code, value, flags, unit, label, pid)  # type: ignore[arg-type]
    elif kind is Kind.DEVICE:
        t, state = r.unpack(_DEVICE_MID)
        protocol = r.ascii("protocol")
        texts = [r.utf8("device") for _ in range(5)]
        msg = DeviceStatus(t, state, protocol, *texts)  # type: ignore[arg-type]
    else:
        cmd, rid = r.unpack(_CTRL_MID)
        if cmd in (Command.START_STREAM, Command.STOP_STREAM):
            msg = Control(cmd, rid, signal=r.ascii("signal"))  # type: ignore[arg-type]
        elif cmd == Command.SET_ALARM_LIMIT:
            rule = r.ascii("rule")
            limit = _f64(r.take(8), "limit")
            msg = Control(cmd, rid, rule=rule, limit=limit)  # type: ignore[arg-type]
        elif cmd == Command.PING_TEXT:
            msg = Control(cmd, rid, text=r.utf8("text"))  # type: ignore[arg-type]
        elif cmd == Command.PATIENT_STATUS:
            msg = _patient_status(r, rid)  # type: ignore[arg-type]
        else:
            raise CodecError("command", f"unknown command {cmd}")
    r.end()
    return msg


def _patient_status(r: _Reader, request_id: int) -> PatientStatus:
    """Order of checks (docs/protocol.md 7.7): stream as soon as it is read; each string's
    length and encoding as it is read; trailing bytes; then the content rules of label,
    subject and hr_source."""
    stream = r.u8()
    _check(stream in set(Stream), "stream", str(stream))
    label = r.utf8("label")
    subject = _ascii_any(r, "subject")
    hr_source = _ascii_any(r, "hr-source")
    r.end()
    return PatientStatus(request_id, Stream(stream), label, subject, hr_source)


def _ascii_any(r: _Reader, reason: str) -> str:
    """A str8 of 7-bit bytes; which of them are allowed is the constructor's check."""
    try:
        return r.short_bytes().decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError(reason, "not ASCII") from exc
