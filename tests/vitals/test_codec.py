import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmed.core.errors import CodecError
from p2pmed.vitals import codec
from p2pmed.vitals.codec import (
    Alarm,
    AlarmAck,
    AlarmCategory,
    AlarmState,
    Command,
    Control,
    Numerics,
    Param,
    PatientStatus,
    Priority,
    StatusFlags,
    Stream,
    Waveform,
    decode,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
T = 1_700_000_000_000_000

# -- strategies ---------------------------------------------------------------------------

u64 = st.integers(0, codec.U64)
text_chars = st.characters(blacklist_categories=("Cc", "Cs"))
patient = st.text(text_chars, min_size=1, max_size=16).filter(
    lambda s: len(s.encode()) <= codec.MAX_ID
)
value = st.none() | st.integers(0, 0xFFFE)
finite = st.floats(allow_nan=False, allow_infinity=False)
code = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,31}", fullmatch=True)
endpoint = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@st.composite
def numerics(draw: st.DrawFn) -> Numerics:
    vals = {codec.FIELD_NAME[p]: draw(value) for p in Param}
    flags = draw(st.sampled_from([0, 1, 2, 4, 7]))
    for p in Param:
        if vals[codec.FIELD_NAME[p]] is not None and draw(st.booleans()):
            flags |= codec.suspect_flag(p)
    return Numerics(draw(u64), draw(patient), flags=StatusFlags(flags), **vals)


@st.composite
def waveforms(draw: st.DrawFn) -> Waveform:
    signal = draw(st.sampled_from([*sorted(codec.ECG_LEADS), codec.PLETH]))
    lo, hi = codec.rate_limits(signal)
    samples = draw(st.lists(st.integers(-32768, 32767), min_size=1, max_size=300))
    return Waveform(
        signal,
        draw(st.integers(lo, hi)),
        draw(u64),
        draw(st.integers(0, codec.U64 - len(samples) + 1)),
        draw(st.floats(1e-6, 1e3)),
        draw(st.sampled_from(["mV", "uV", "1", "mm[Hg]"])),
        tuple(samples),
    )


alarms = st.builds(
    Alarm,
    u64,
    st.sampled_from(Priority),
    st.sampled_from(AlarmState),
    st.sampled_from(AlarmCategory),
    u64,
    st.none() | finite,
    code,
    patient,
)
acks = st.builds(AlarmAck, u64, u64, endpoint)
controls = st.one_of(
    st.builds(
        Control,
        st.sampled_from([Command.START_STREAM, Command.STOP_STREAM]),
        st.integers(0, 0xFFFFFFFF),
        signal=st.sampled_from(["", "II", "PLETH", "V5"]),
    ),
    st.builds(
        Control,
        st.just(Command.SET_ALARM_LIMIT),
        st.integers(0, 0xFFFFFFFF),
        rule=code,
        limit=st.none() | finite,
    ),
    st.builds(
        Control,
        st.just(Command.PING_TEXT),
        st.integers(0, 0xFFFFFFFF),
        text=st.text(text_chars, max_size=60),
    ),
)
statuses = st.builds(
    PatientStatus,
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from(Stream),
    st.text(text_chars, max_size=60),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
    st.text(st.sampled_from("abcxyz0129-"), max_size=32),
)
messages = st.one_of(numerics(), waveforms(), alarms, acks, controls, statuses)
KIND = {PatientStatus: codec.Kind.CONTROL, AlarmAck: codec.Kind.ALARM_ACK}

# -- properties ---------------------------------------------------------------------------


@given(messages)
def test_roundtrip(msg: codec.Message) -> None:
    data = encode(msg)
    kind = KIND[type(msg)] if type(msg) in KIND else codec.Kind[type(msg).__name__.upper()]
    assert data[0] == kind
    assert decode(data) == msg
    assert encode(decode(data)) == data


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_message_or_codec_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except CodecError as exc:
        assert exc.reason != "malformed"  # every rejection is a deliberate check, not a crash
    else:
        assert encode(msg) == data  # the encoding is canonical: one message, one byte string


@given(st.sampled_from(list(codec.Kind)), st.binary(max_size=400))
def test_arbitrary_bodies_behind_valid_kind(kind: codec.Kind, body: bytes) -> None:
    data = bytes([kind, codec.VERSION]) + body
    try:
        msg = decode(data)
    except CodecError as exc:
        assert exc.reason != "malformed"
        return
    assert encode(msg) == data


@given(messages, st.data())
def test_mutated_valid_messages(msg: codec.Message, data: st.DataObject) -> None:
    raw = bytearray(encode(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        out = decode(bytes(raw))
    except CodecError as exc:
        assert exc.reason != "malformed"
        return
    assert encode(out) == bytes(raw)


@given(messages)
def test_every_truncation_and_extension_rejected(msg: codec.Message) -> None:
    data = encode(msg)
    for n in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:n])
    with pytest.raises(CodecError) as exc:
        decode(data + b"\x00")
    assert exc.value.reason in ("trailing", "count", "truncated")


# -- worked examples in docs/protocol.md section 7 ----------------------------------------------

EXAMPLES: dict[str, codec.Message] = {
    "numerics": Numerics(T, "bed-7", 720, 1200, 800, 9750, 3685, 140, StatusFlags.LOW_BATTERY),
    "waveform": Waveform("II", 500, T, 1000, 0.005, "mV", (0, 12, 150, 1100, -250)),
    "alarm": Alarm(
        42,
        Priority.HIGH,
        AlarmState.ACTIVE,
        AlarmCategory.PHYSIOLOGICAL,
        T,
        84.5,
        "spo2-very-low",
        "bed-7",
    ),
    "alarm-technical": Alarm(
        43,
        Priority.MEDIUM,
        AlarmState.ACTIVE,
        AlarmCategory.TECHNICAL,
        T,
        None,
        "comms-lost",
        "bed-7",
    ),
    "alarm-ack": AlarmAck(42, T + 5_000_000, "clin-1"),
    "control-limit": Control(Command.SET_ALARM_LIMIT, 7, rule="hr-high", limit=130.0),
    "control-start": Control(Command.START_STREAM, 8, signal="PLETH"),
    "control-ping": Control(Command.PING_TEXT, 9, text="hi"),
    "patient-status": PatientStatus(2, Stream.ENDED, "Bed 7", "Patient/p-1", "annotations"),
    "patient-status-empty": PatientStatus(),
    "alarm-device": Alarm(
        44,
        Priority.MEDIUM,
        AlarmState.ACTIVE,
        AlarmCategory.DEVICE_PHYSIOLOGICAL,
        T,
        None,
        "dev-spo2-lo",
        "bed-7",
    ),
    "metric": codec.DeviceMetric(
        T, 149530, 71.0, codec.MetricFlags.NONE, "/min", "MDC_PULS_OXIM_PULS_RATE", "bed-7"
    ),
    "device": codec.DeviceStatus(
        T, codec.DeviceState.CONNECTED, "hl7", "MON-1", "VS-9", "SN42", "ACME", "PID-7"
    ),
}


def _doc_examples() -> dict[str, bytes]:
    found = re.findall(r"<!-- example: ([\w-]+) -->\s*```hex\n(.*?)```", DOC.read_text(), re.S)
    return {name: bytes.fromhex(hexstr) for name, hexstr in found}


def test_doc_has_every_example() -> None:
    assert set(_doc_examples()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_doc_example(name: str) -> None:
    raw = _doc_examples()[name]
    assert encode(EXAMPLES[name]) == raw
    assert decode(raw) == EXAMPLES[name]


def test_numerics_physical_values() -> None:
    n = decode(_doc_examples()["numerics"])
    assert isinstance(n, Numerics)
    assert n.value(Param.HR) == 72.0
    assert n.value(Param.SPO2) == 97.5
    assert n.value(Param.TEMP) == 36.85
    assert n.flags == StatusFlags.LOW_BATTERY


# -- specific rejections ------------------------------------------------------------------


def _reason(data: bytes) -> str:
    with pytest.raises(CodecError) as exc:
        decode(data)
    return exc.value.reason


def _example(name: str) -> bytearray:
    return bytearray(_doc_examples()[name])


def test_empty_oversized_kind_version() -> None:
    assert _reason(b"") == "truncated"
    assert _reason(b"\x01") == "truncated"
    assert _reason(b"\x02\x01" + b"\x00" * codec.MAX_MESSAGE) == "oversized"
    assert _reason(b"\x00\x01") == "kind"
    assert _reason(b"\x08\x01") == "kind"
    assert _reason(b"\x06\x01") == "truncated"  # METRIC
    assert _reason(b"\x01\x02" + bytes(28)) == "version"


def test_non_bytes_input() -> None:
    assert _reason("hello") == "type"  # type: ignore[arg-type]
    assert _reason(None) == "type"  # type: ignore[arg-type]


def test_numerics_flag_rules() -> None:
    raw = _example("numerics")
    raw[-2:] = b"\x40\x00"  # undefined bit 14
    assert _reason(bytes(raw)) == "flags"
    raw = _example("numerics")
    raw[16:18] = b"\xff\xff"  # hr absent ...
    raw[-2:] = b"\x01\x00"  # ... but marked suspect
    assert _reason(bytes(raw)) == "flags"
    raw[-2:] = b"\x00\x00"
    n = decode(bytes(raw))
    assert isinstance(n, Numerics) and n.hr_x10 is None


def test_patient_id_rules() -> None:
    raw = _example("numerics")
    raw[11] = 0xFF  # invalid UTF-8
    assert _reason(bytes(raw)) == "patient"
    raw = _example("numerics")
    raw[11] = 0x0A  # newline: control character
    assert _reason(bytes(raw)) == "patient"
    with pytest.raises(CodecError) as exc:
        Numerics(T, "")
    assert exc.value.reason == "patient"
    with pytest.raises(CodecError):
        Numerics(T, "x" * 65)


def test_waveform_rate_limits() -> None:
    raw = _example("waveform")
    for rate, ok in ((249, False), (250, True), (1000, True), (1001, False)):
        raw[5:7] = struct.pack(">H", rate)
        if ok:
            assert isinstance(decode(bytes(raw)), Waveform)
        else:
            assert _reason(bytes(raw)) == "rate"
    with pytest.raises(CodecError) as exc:
        Waveform("PLETH", 250, 0, 0, 1.0, "1", (0,))
    assert exc.value.reason == "rate"
    assert isinstance(Waveform("PLETH", 100, 0, 0, 1.0, "1", (0,)), Waveform)
    with pytest.raises(CodecError):
        Waveform("PLETH", 126, 0, 0, 1.0, "1", (0,))


def test_waveform_field_rejections() -> None:
    raw = _example("waveform")
    raw[3:5] = b"XX"
    assert _reason(bytes(raw)) == "signal"
    raw = _example("waveform")
    raw[23:27] = struct.pack(">f", 0.0)
    assert _reason(bytes(raw)) == "scale"
    raw[23:27] = struct.pack(">f", math.inf)
    assert _reason(bytes(raw)) == "scale"
    raw[23:27] = struct.pack(">f", -1.0)
    assert _reason(bytes(raw)) == "scale"
    raw = _example("waveform")
    raw[30:32] = b"\x00\x06"  # count says 6, 5 present
    assert _reason(bytes(raw)) == "truncated"
    raw[30:32] = b"\x00\x04"
    assert _reason(bytes(raw)) == "trailing"
    raw[30:32] = b"\x00\x00"
    assert _reason(bytes(raw)) == "count"
    raw = _example("waveform")
    raw[29] = 0x20  # "m ": space is not allowed in a unit
    assert _reason(bytes(raw)) == "unit"
    raw = _example("waveform")
    raw[15:23] = b"\xff" * 8  # first_seq + 5 samples overflows u64
    assert _reason(bytes(raw)) == "seq"


def test_waveform_sample_count_limit() -> None:
    Waveform("II", 500, 0, 0, 1.0, "mV", (0,) * codec.MAX_SAMPLES)
    with pytest.raises(CodecError) as exc:
        Waveform("II", 500, 0, 0, 1.0, "mV", (0,) * (codec.MAX_SAMPLES + 1))
    assert exc.value.reason == "count"
    with pytest.raises(CodecError) as exc:
        Waveform("II", 500, 0, 0, 1.0, "mV", (40000,))
    assert exc.value.reason == "sample"
    with pytest.raises(CodecError):
        Waveform("II", 500, 0, 0, 1.0, "mV", (1.5,))  # type: ignore[arg-type]
    w = Waveform("II", 500, 0, 0, 1.0, "mV", np.array([1, -2], dtype=np.int16))  # type: ignore[arg-type]
    assert w.samples == (1, -2) and decode(encode(w)) == w


def test_alarm_rejections() -> None:
    raw = _example("alarm")
    raw[10] = 0
    assert _reason(bytes(raw)) == "priority"
    raw = _example("alarm")
    raw[11] = 4
    assert _reason(bytes(raw)) == "state"
    raw = _example("alarm")
    raw[12] = 4  # 2 and 3 are the device categories
    assert _reason(bytes(raw)) == "category"
    raw = _example("alarm")
    raw[21:29] = struct.pack(">d", math.inf)
    assert _reason(bytes(raw)) == "value"
    raw[21:29] = bytes.fromhex("7ff8000000000001")  # a NaN, but not the canonical one
    assert _reason(bytes(raw)) == "value"
    raw = _example("alarm")
    raw[30] = ord("S")  # upper case not allowed in a condition code
    assert _reason(bytes(raw)) == "condition"


def test_ack_rejections() -> None:
    raw = _example("alarm-ack")
    raw[19] = ord(" ")
    assert _reason(bytes(raw)) == "who"
    with pytest.raises(CodecError):
        AlarmAck(1, 1, "x" * 65)
    with pytest.raises(CodecError):
        AlarmAck(-1, 1, "x")


def test_control_rejections() -> None:
    raw = _example("control-start")
    raw[2] = 9
    assert _reason(bytes(raw)) == "command"
    raw = _example("control-start")
    raw[8:13] = b"RESPX"
    assert _reason(bytes(raw)) == "signal"
    raw = _example("control-ping")
    raw[8] = 0x07  # BEL
    assert _reason(bytes(raw)) == "text"
    raw = _example("control-limit")
    raw[-8:] = struct.pack(">d", -math.inf)
    assert _reason(bytes(raw)) == "limit"
    with pytest.raises(CodecError) as exc:
        Control(Command.PING_TEXT, 1, signal="II")
    assert exc.value.reason == "field"
    with pytest.raises(CodecError):
        Control(Command.PING_TEXT, 1, text="x" * 256)
    with pytest.raises(CodecError):
        Control(Command.START_STREAM, 2**32)
    limit_none = Control(Command.SET_ALARM_LIMIT, 1, rule="hr-high", limit=None)
    assert encode(limit_none).endswith(bytes.fromhex("7ff8000000000000"))


def test_patient_status_is_not_a_control() -> None:
    with pytest.raises(CodecError) as exc:
        Control(Command.PATIENT_STATUS, 1)
    assert exc.value.reason == "command"
    st = decode(encode(PatientStatus(label="Bed 7")))
    assert isinstance(st, PatientStatus) and not isinstance(st, Control)
    assert st.command is Command.PATIENT_STATUS


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(CodecError):
        encode("numerics")  # type: ignore[arg-type]


def test_from_values_rounds_to_fixed_point() -> None:
    n = Numerics.from_values(T, "p", {Param.HR: 72.46, Param.TEMP: 36.849, Param.SPO2: None})
    assert (n.hr_x10, n.temp_x100, n.spo2_x100) == (725, 3685, None)
    with pytest.raises(CodecError):
        Numerics.from_values(T, "p", {Param.HR: math.nan})
    with pytest.raises(CodecError):
        Numerics.from_values(T, "p", {Param.HR: -1.0})
