"""Writes tests/vectors/wire_v1.json: frame, ACK, control-payload and vitals vectors.

The bytes are built here with struct and zlib, not with p2pmed's encoders, and every
expected outcome is written out by hand below, so the vectors pin the protocol as
documented (docs/protocol.md sections 1, 4 and 7), not whatever the code does today.
Both the Python tests (tests/core/test_wire_vectors.py, tests/vitals/test_codec.py)
and the page's tests (tests/web/test_wire_vectors_js.py) read the JSON.

Run: .venv/bin/python -m tests.vectors.gen_wire_v1
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("wire_v1.json")
HDR = struct.Struct(">BBBBIQQQQI")
TS = 1_767_225_600_000_000
U64 = (1 << 64) - 1


def frame(
    ftype: int = 1,
    flags: int = 3,
    cls: int = 1,
    epoch: int = 1,
    pn: int = 7,
    seq: int = 3,
    ack: int = 2,
    ts: int = TS,
    payload: bytes = bytes(range(20)),
    *,
    version: int = 1,
    length: int | None = None,
    bad_crc: bool = False,
) -> bytes:
    n = len(payload) if length is None else length
    body = HDR.pack(version, ftype, flags, cls, epoch, pn, seq, ack, ts, n) + payload
    crc = zlib.crc32(body) ^ (1 if bad_crc else 0)
    return body + crc.to_bytes(4, "big")


def segments(data: bytes) -> list[list[object]]:
    """Run-length hex segments [[hex, repeat], ...] so large frames stay small in JSON."""
    out: list[list[object]] = []
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= 16:
            out.append([f"{data[i]:02x}", j - i])
        elif out and out[-1][1] == 1:
            out[-1][0] = str(out[-1][0]) + data[i:j].hex()
        else:
            out.append([data[i:j].hex(), 1])
        i = j
    return out


def hdr(ftype: int, flags: int, cls: int, epoch: int, pn: int, seq: int, ack: int, n: int) -> dict:
    return {
        "type": ftype,
        "flags": flags,
        "cls": cls,
        "epoch": epoch,
        "pn": pn,
        "seq": seq,
        "ack": ack,
        "timestamp_us": TS,
        "length": n,
    }


def frame_vectors() -> list[dict[str, Any]]:
    p20 = bytes(range(20))
    v: list[dict[str, Any]] = []

    def ok(name: str, data: bytes, header: dict, payload: bytes) -> None:
        v.append(
            {"name": name, "bytes": segments(data), "header": header, "payload": segments(payload)}
        )

    def bad(name: str, data: bytes, reason: str, why: str) -> None:
        v.append({"name": name, "bytes": segments(data), "error": ["frame", reason], "why": why})

    ok("data single chunk", frame(), hdr(1, 3, 1, 1, 7, 3, 2, 20), p20)
    ok(
        "data batch, huge pn/seq/ack",
        frame(flags=4, cls=2, pn=U64, seq=2**53 + 1, ack=2**60),
        hdr(1, 4, 2, 1, U64, 2**53 + 1, 2**60, 20),
        p20,
    )
    ok(
        "hs_commit plaintext",
        frame(0x10, 0, 0, 0, 0, 0, 0, payload=bytes(32)),
        hdr(0x10, 0, 0, 0, 0, 0, 0, 32),
        bytes(32),
    )
    ok(
        "ack frame, empty payload (48 bytes, smallest frame)",
        frame(2, 0, 0, 7, 9, 0, 0, payload=b""),
        hdr(2, 0, 0, 7, 9, 0, 0, 0),
        b"",
    )
    big = bytes(64512 + 16)
    ok("largest frame (64576 bytes)", frame(payload=big), hdr(1, 3, 1, 1, 7, 3, 2, len(big)), big)
    bad("47 bytes", frame(payload=b"")[:-1], "truncated", "shorter than 48")
    bad("64577 bytes", frame(payload=big + b"\0"), "oversized", "longer than 64576")
    bad(
        "47 bytes with a wrong CRC",
        frame(payload=b"", bad_crc=True)[:-1],
        "truncated",
        "size is checked before the CRC",
    )
    bad(
        "oversized with a wrong CRC",
        frame(payload=big + b"\0", bad_crc=True),
        "oversized",
        "size is checked before the CRC",
    )
    bad("flipped CRC bit", frame(bad_crc=True), "crc", "")
    bad(
        "wrong version and wrong CRC",
        frame(version=2, bad_crc=True),
        "crc",
        "the CRC is checked before the header fields",
    )
    bad("version 2", frame(version=2), "version", "")
    bad("version 0", frame(version=0), "version", "")
    bad("length field one too large", frame(length=21), "length", "")
    bad("length field one too small", frame(length=19), "length", "")
    bad(
        "wrong length and unknown type",
        frame(0x07, length=21),
        "length",
        "length is checked before type",
    )
    bad("type 0x07", frame(0x07), "type", "")
    bad("type 0x00", frame(0x00), "type", "")
    bad("type 0x14", frame(0x14, epoch=0), "type", "")
    bad("unknown type and class 5", frame(0x07, cls=5), "type", "type before class")
    bad("class 5", frame(cls=5), "class", "")
    bad("class 255", frame(cls=255), "class", "")
    bad("class 5 and flag 0x08", frame(cls=5, flags=8), "class", "class before flags")
    bad("flag 0x08", frame(flags=8), "flags", "")
    bad("flag 0x80", frame(flags=0x80), "flags", "")
    bad("flag 0x08 on HS_COMMIT with epoch 1", frame(0x10, 8, 0, 1), "flags", "flags before epoch")
    bad("HS_COMMIT in epoch 1", frame(0x10, 0, 0, 1, 0, 0, 0), "epoch", "")
    bad("DATA in epoch 0", frame(epoch=0), "epoch", "")
    bad("PING in epoch 0", frame(3, 0, 0, 0, 9, 0, 0, payload=bytes(24)), "epoch", "")
    return v


def ack(largest: int, delay: int, entries: list[tuple[int, int, list[tuple[int, int]]]]) -> bytes:
    out = struct.pack(">QIB", largest, delay, len(entries))
    for cls, cum, ranges in entries:
        out += struct.pack(">BQB", cls, cum, len(ranges))
        out += b"".join(struct.pack(">QQ", s, e) for s, e in ranges)
    return out


def ack_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []

    def ok(name: str, largest: int, delay: int, entries: list) -> None:
        v.append(
            {
                "name": name,
                "payload": ack(largest, delay, entries).hex(),
                "ack": {
                    "largest_pn": largest,
                    "ack_delay_us": delay,
                    "entries": [
                        {"cls": c, "cumulative": cum, "ranges": [list(r) for r in rs]}
                        for c, cum, rs in entries
                    ],
                },
            }
        )

    def bad(name: str, payload: bytes, why: str = "") -> None:
        v.append(
            {"name": name, "payload": payload.hex(), "error": ["frame", "payload"], "why": why}
        )

    ok("no classes", 9, 1500, [])
    ok("one class, cumulative only", 12, 0, [(1, 5, [])])
    ok("range starting at cumulative", 40, 250, [(2, 7, [(7, 9)])])
    ok(
        "all classes, ranges newest first",
        1000,
        4_000_000_000,
        [(0, 3, []), (1, 10, [(20, 25), (12, 15)]), (2, 0, [(1, 2)]), (3, 1, []), (4, 8, [])],
    )
    ok("32 ranges", 77, 5, [(3, 0, [(100 - 3 * i, 101 - 3 * i) for i in range(32)])])
    ok("u64 extremes", U64, 0xFFFFFFFF, [(4, 2**60, [(2**60, U64)])])
    bad("12 bytes", ack(9, 0, [])[:-1], "shorter than the 13-byte head")
    bad("n = 1 without an entry", ack(9, 0, [])[:-1] + b"\x01")
    bad("entry cut short", ack(9, 0, [(1, 5, [])])[:-1])
    bad("range cut short", ack(9, 0, [(1, 5, [(6, 8)])])[:-1])
    bad("trailing byte", ack(9, 0, [(1, 5, [])]) + b"\x00")
    bad("class 5", ack(9, 0, [(5, 5, [])]))
    bad("class twice", ack(9, 0, [(1, 5, []), (1, 6, [])]), "each class at most once")
    bad("33 ranges", ack(9, 0, [(1, 0, [(2 * i + 1, 2 * i + 2) for i in range(33)])]))
    bad("range below cumulative", ack(9, 0, [(1, 5, [(4, 8)])]), "cumulative <= start")
    bad("empty range", ack(9, 0, [(1, 5, [(6, 6)])]), "start < end")
    bad("reversed range", ack(9, 0, [(1, 5, [(8, 6)])]), "start < end")
    return v


def control_vectors() -> list[dict[str, Any]]:
    """Payloads of the other encrypted control frames (section 4), checked after decryption."""
    bind = b"\x06direct" + bytes(range(32)) + bytes(range(32, 64))
    v: list[dict[str, Any]] = []

    def ok(name: str, ftype: int, payload: bytes) -> None:
        v.append({"name": name, "type": ftype, "payload": payload.hex(), "ok": True})

    def bad(name: str, ftype: int, payload: bytes) -> None:
        v.append(
            {"name": name, "type": ftype, "payload": payload.hex(), "error": ["frame", "payload"]}
        )

    ok("PING", 3, bytes(range(8)))
    bad("PING of 7 bytes", 3, bytes(7))
    bad("PING of 9 bytes", 3, bytes(9))
    ok("PONG", 4, bytes(range(8)))
    bad("PONG of 0 bytes", 4, b"")
    bad("PONG of 9 bytes", 4, bytes(9))
    ok("CLOSE without reason", 5, b"\x00\x00")
    ok("CLOSE with reason", 5, b"\x00\x02bye")
    bad("CLOSE of 1 byte", 5, b"\x00")
    ok("PATH_BIND", 6, bind)
    bad("PATH_BIND empty", 6, b"")
    bad("PATH_BIND one byte short", 6, bind[:-1])
    bad("PATH_BIND one byte long", 6, bind + b"\x00")
    return v


def short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


NAN = bytes.fromhex("7ff8000000000000")


def numerics(
    pid: bytes = b"bed-7", vals: tuple = (720, 1200, 800, 9750, 3685, 140), flags: int = 4
) -> bytes:
    return (
        b"\x01\x01"
        + struct.pack(">Q", 1_700_000_000_000_000)
        + short(pid)
        + struct.pack(">7H", *vals, flags)
    )


def waveform(
    signal: bytes = b"II",
    rate: int = 500,
    first: int = 1000,
    scale: bytes = struct.pack(">f", 0.005),
    unit: bytes = b"mV",
    samples: tuple = (0, 12, 150, 1100, -250),
    count: int | None = None,
) -> bytes:
    n = len(samples) if count is None else count
    return (
        b"\x02\x01"
        + short(signal)
        + struct.pack(">HQQ", rate, 1_700_000_000_000_000, first)
        + scale
        + short(unit)
        + struct.pack(f">H{len(samples)}h", n, *samples)
    )


def alarm(
    prio: int = 3,
    state: int = 0,
    cat: int = 0,
    value: bytes = struct.pack(">d", 84.5),
    cond: bytes = b"spo2-very-low",
    pid: bytes = b"bed-7",
) -> bytes:
    return (
        b"\x03\x01"
        + struct.pack(">QBBBQ", 42, prio, state, cat, 1_700_000_000_000_000)
        + value
        + short(cond)
        + short(pid)
    )


def alarm_ack(who: bytes = b"clin-1") -> bytes:
    return b"\x04\x01" + struct.pack(">QQ", 42, 1_700_000_005_000_000) + short(who)


def control(cmd: int, body: bytes, rid: int = 7) -> bytes:
    return b"\x05\x01" + struct.pack(">BI", cmd, rid) + body


def vitals_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []
    t = 1_700_000_000_000_000
    f005 = struct.unpack(">f", struct.pack(">f", 0.005))[0]

    def ok(name: str, data: bytes, msg: dict) -> None:
        v.append({"name": name, "hex": data.hex(), "message": msg})

    def bad(name: str, data: bytes, reason: str, why: str = "") -> None:
        v.append({"name": name, "hex": data.hex(), "error": ["codec", reason], "why": why})

    num = {
        "kind": "numerics",
        "timestamp_us": t,
        "patient_id": "bed-7",
        "hr_x10": 720,
        "sys_x10": 1200,
        "dia_x10": 800,
        "spo2_x100": 9750,
        "temp_x100": 3685,
        "rr_x10": 140,
        "flags": 4,
    }
    ok("numerics (section 7.1 example)", numerics(), num)
    ok(
        "numerics, absent values, suspect bits, 64-byte patient id",
        numerics(b"p" * 64, (65534, 0xFFFF, 0, 0xFFFF, 1, 0xFFFF), 0x1107),
        {
            **num,
            "patient_id": "p" * 64,
            "hr_x10": 65534,
            "sys_x10": None,
            "dia_x10": 0,
            "spo2_x100": None,
            "temp_x100": 1,
            "rr_x10": None,
            "flags": 0x1107,
        },
    )
    ok(
        "numerics, UTF-8 patient id with a leading BOM kept",
        numerics("\ufeffpé".encode()),
        {**num, "patient_id": "\ufeffpé"},
    )
    wave = {
        "kind": "waveform",
        "signal": "II",
        "sample_rate": 500,
        "t0_us": t,
        "first_seq": 1000,
        "scale": f005,
        "unit": "mV",
        "samples": [0, 12, 150, 1100, -250],
    }
    ok("waveform (section 7.2 example)", waveform(), wave)
    ok(
        "waveform PLETH, last sample at seq 2^64-1",
        waveform(b"PLETH", 125, U64 - 1, unit=b"1", samples=(-32768, 32767)),
        {
            **wave,
            "signal": "PLETH",
            "sample_rate": 125,
            "first_seq": U64 - 1,
            "unit": "1",
            "samples": [-32768, 32767],
        },
    )
    al = {
        "kind": "alarm",
        "alarm_id": 42,
        "priority": 3,
        "state": 0,
        "category": 0,
        "time_us": t,
        "value": 84.5,
        "condition": "spo2-very-low",
        "patient_id": "bed-7",
    }
    ok("alarm (section 7.3 example)", alarm(), al)
    ok(
        "alarm without a value",
        alarm(2, 3, 1, NAN, b"comms-lost"),
        {**al, "priority": 2, "state": 3, "category": 1, "value": None, "condition": "comms-lost"},
    )
    ok(
        "alarm forwarded from a device (category 2)",
        alarm(2, 0, 2, NAN, b"dev-spo2-lo"),
        {**al, "priority": 2, "category": 2, "value": None, "condition": "dev-spo2-lo"},
    )
    ok(
        "device technical alarm (category 3)",
        alarm(1, 3, 3, NAN, b"dev-lead-off"),
        {
            **al,
            "priority": 1,
            "state": 3,
            "category": 3,
            "value": None,
            "condition": "dev-lead-off",
        },
    )
    ok(
        "alarm_ack (section 7.4 example)",
        alarm_ack(),
        {"kind": "alarm_ack", "alarm_id": 42, "time_us": t + 5_000_000, "who": "clin-1"},
    )
    ok(
        "control SET_ALARM_LIMIT",
        control(3, short(b"hr-high") + struct.pack(">d", 130.0)),
        {"kind": "control", "command": 3, "request_id": 7, "rule": "hr-high", "limit": 130.0},
    )
    ok(
        "control SET_ALARM_LIMIT cleared",
        control(3, short(b"hr-high") + NAN),
        {"kind": "control", "command": 3, "request_id": 7, "rule": "hr-high", "limit": None},
    )
    ok(
        "control START_STREAM all signals",
        control(1, short(b""), 0xFFFFFFFF),
        {"kind": "control", "command": 1, "request_id": 0xFFFFFFFF, "signal": ""},
    )
    ok(
        "control STOP_STREAM PLETH",
        control(2, short(b"PLETH")),
        {"kind": "control", "command": 2, "request_id": 7, "signal": "PLETH"},
    )
    ok(
        "control PING_TEXT empty",
        control(4, short(b"")),
        {"kind": "control", "command": 4, "request_id": 7, "text": ""},
    )
    ok(
        "control PING_TEXT UTF-8",
        control(4, short("grüße".encode())),
        {"kind": "control", "command": 4, "request_id": 7, "text": "grüße"},
    )

    bad("empty", b"", "truncated")
    bad("kind only", b"\x01", "truncated")
    bad("16385 bytes", b"\x01\x01" + bytes(16383), "oversized")
    bad("kind 0", b"\x00\x01", "kind")
    bad("kind 8", b"\x08\x01" + bytes(20), "kind")
    bad("version 2", b"\x01\x02" + numerics()[2:], "version")
    bad("kind checked before version", b"\x09\x02", "kind")
    bad("numerics cut short", numerics()[:-1], "truncated")
    bad("numerics trailing byte", numerics() + b"\x00", "trailing")
    bad("numerics empty patient id", numerics(b""), "patient")
    bad("numerics 65-byte patient id", numerics(b"p" * 65), "patient")
    bad("numerics patient id with BEL", numerics(b"bed\x077"), "patient")
    bad("numerics patient id with DEL", numerics(b"bed\x7f7"), "patient")
    bad("numerics patient id with C1 NEL", numerics("bed\u00857".encode()), "patient")
    bad("numerics patient id not UTF-8", numerics(b"bed\xff"), "patient")
    bad("numerics patient id a UTF-8 surrogate", numerics(b"\xed\xa0\x80"), "patient")
    bad("numerics undefined flag 0x0008", numerics(flags=0x0008), "flags")
    bad("numerics undefined flag 0x8000", numerics(flags=0x8000), "flags")
    bad(
        "numerics suspect bit on absent value",
        numerics(vals=(720, 0xFFFF, 800, 9750, 3685, 140), flags=0x0200),
        "flags",
    )
    bad(
        "numerics bad patient and bad flags",
        numerics(b"", flags=0x0008),
        "patient",
        "patient is checked before flags",
    )
    bad(
        "numerics bad patient id, cut short",
        numerics(b"bed\x07")[:-1],
        "truncated",
        "all fields are read before any is validated",
    )
    bad("waveform unknown signal", waveform(b"ECG"), "signal")
    bad("waveform signal not printable", waveform(b"I\x01"), "signal")
    bad("waveform ECG at 249 Hz", waveform(rate=249), "rate")
    bad("waveform ECG at 1001 Hz", waveform(rate=1001), "rate")
    bad("waveform PLETH at 250 Hz", waveform(b"PLETH", 250), "rate")
    bad("waveform seq overflows u64", waveform(first=U64 - 3), "seq")
    bad("waveform scale 0", waveform(scale=struct.pack(">f", 0.0)), "scale")
    bad("waveform scale negative", waveform(scale=struct.pack(">f", -0.005)), "scale")
    bad("waveform scale NaN", waveform(scale=bytes.fromhex("7fc00000")), "scale")
    bad("waveform scale infinite", waveform(scale=bytes.fromhex("7f800000")), "scale")
    bad("waveform unit empty", waveform(unit=b""), "unit")
    bad("waveform unit with a space", waveform(unit=b"m V"), "unit")
    bad("waveform unit of 9 bytes", waveform(unit=b"mmmmmmmmV"), "unit")
    bad("waveform unit not printable", waveform(unit=b"m\x80"), "unit")
    bad("waveform count 0", waveform(samples=(), count=0), "count")
    bad("waveform count 4097", waveform(samples=(), count=4097), "count")
    bad("waveform samples cut short", waveform()[:-1], "truncated")
    bad("waveform count above the samples", waveform(count=6), "truncated")
    bad("waveform count below the samples", waveform(count=4), "trailing")
    bad(
        "waveform bad rate, samples cut short",
        waveform(rate=5)[:-1],
        "truncated",
        "all fields are read before any is validated",
    )
    bad(
        "waveform bad rate and bad unit",
        waveform(rate=5, unit=b""),
        "rate",
        "rate is checked before unit",
    )
    bad(
        "waveform unknown signal and bad scale",
        waveform(b"ECG", scale=struct.pack(">f", 0.0)),
        "signal",
        "signal before scale",
    )
    bad("alarm priority 0", alarm(prio=0), "priority")
    bad("alarm priority 4", alarm(prio=4), "priority")
    bad("alarm state 4", alarm(state=4), "state")
    bad("alarm category 4", alarm(cat=4), "category")
    bad("alarm value infinite", alarm(value=struct.pack(">d", float("inf"))), "value")
    bad("alarm value a non-canonical NaN", alarm(value=bytes.fromhex("7ff8000000000001")), "value")
    bad("alarm condition uppercase", alarm(cond=b"SpO2-low"), "condition")
    bad("alarm condition empty", alarm(cond=b""), "condition")
    bad("alarm condition of 33 bytes", alarm(cond=b"a" * 33), "condition")
    bad("alarm condition not printable", alarm(cond=b"low\x00"), "condition")
    bad("alarm patient id with a tab", alarm(pid=b"bed\t7"), "patient")
    bad(
        "alarm bad priority, cut short",
        alarm(prio=9)[:-1],
        "truncated",
        "all fields are read before any is validated",
    )
    bad(
        "alarm bad condition and bad patient",
        alarm(cond=b"X", pid=b""),
        "condition",
        "condition before patient",
    )
    bad("alarm trailing byte", alarm() + b"\x00", "trailing")
    bad("alarm_ack who with a space", alarm_ack(b"clin 1"), "who")
    bad("alarm_ack who empty", alarm_ack(b""), "who")
    bad("alarm_ack who of 65 bytes", alarm_ack(b"c" * 65), "who")
    bad("alarm_ack who not printable", alarm_ack(b"clin\x7f"), "who")
    bad("alarm_ack cut short", alarm_ack()[:-1], "truncated")
    bad("control command 0", control(0, short(b"")), "command")
    bad("control command 6", control(6, short(b"")), "command")
    bad("control request id cut short", b"\x05\x01\x01\x00\x00\x00", "truncated")
    bad("control START_STREAM unknown signal", control(1, short(b"ECG")), "signal")
    bad("control START_STREAM signal not printable", control(1, short(b"I\x00")), "signal")
    bad("control SET_ALARM_LIMIT rule uppercase", control(3, short(b"HR") + NAN), "rule")
    bad("control SET_ALARM_LIMIT rule empty", control(3, short(b"") + NAN), "rule")
    bad(
        "control SET_ALARM_LIMIT limit infinite",
        control(3, short(b"hr-high") + struct.pack(">d", float("-inf"))),
        "limit",
    )
    bad(
        "control SET_ALARM_LIMIT bad rule and bad limit",
        control(3, short(b"HR") + struct.pack(">d", float("inf"))),
        "limit",
        "limit is read (and its NaN/infinity checked) before rule is validated",
    )
    bad(
        "control SET_ALARM_LIMIT limit cut short",
        control(3, short(b"hr-high") + NAN[:-1]),
        "truncated",
    )
    bad("control PING_TEXT with a newline", control(4, short(b"hi\n")), "text")
    bad("control PING_TEXT not UTF-8", control(4, short(b"\xc3")), "text")
    bad("control PING_TEXT trailing byte", control(4, short(b"hi")) + b"!", "trailing")
    return v


def status(
    stream: int = 0,
    label: bytes = b"",
    subject: bytes = b"",
    hr: bytes = b"",
    rid: int = 0,
    cmd: int = 5,
    version: int = 1,
) -> bytes:
    return (
        bytes([0x05, version])
        + struct.pack(">BIB", cmd, rid, stream)
        + short(label)
        + short(subject)
        + short(hr)
    )


def patient_status_vectors() -> list[dict[str, Any]]:
    """PATIENT_STATUS (CONTROL command 5, section 7.5): a section of its own until the page's
    vitals decoder knows command 5."""
    v: list[dict[str, Any]] = []

    def ok(name: str, data: bytes, rid: int, stream: int, label: str, subj: str, hr: str) -> None:
        msg = {"kind": "patient_status", "request_id": rid, "stream": stream, "label": label}
        msg.update(subject=subj, hr_source=hr)
        v.append({"name": name, "hex": data.hex(), "message": msg})

    def bad(name: str, data: bytes, reason: str, why: str = "") -> None:
        v.append({"name": name, "hex": data.hex(), "error": ["codec", reason], "why": why})

    ok(
        "patient_status (section 7.5 example)",
        status(1, b"Bed 7", b"Patient/p-1", b"annotations", rid=2),
        *(2, 1, "Bed 7", "Patient/p-1", "annotations"),
    )
    ok("patient_status empty", status(), 0, 0, "", "", "")
    ok(
        "patient_status UTF-8 label, URL subject",
        status(0, "Ånna Ö — 床 7".encode(), b"https://fhir.example/Patient/9", b"ecg-detector", 7),
        *(7, 0, "Ånna Ö — 床 7", "https://fhir.example/Patient/9", "ecg-detector"),
    )
    ok(
        "patient_status longest fields",
        status(0, "é".encode() * 127 + b"x", b"P" * 255, b"a" * 32, 0xFFFFFFFF),
        *(0xFFFFFFFF, 0, "é" * 127 + "x", "P" * 255, "a" * 32),
    )
    ok(
        "patient_status label keeps a leading BOM",
        status(0, "\ufeffBed".encode()),
        *(0, 0, "\ufeffBed", "", ""),
    )
    head = status()[:7]
    bad("patient_status no stream byte", head, "truncated")
    bad("patient_status no hr_source length", status()[:-1], "truncated")
    bad("patient_status label cut short", head + b"\x00\x05A", "truncated")
    bad("patient_status trailing byte", status() + b"\x00", "trailing")
    bad("patient_status version 2", status(version=2), "version")
    bad("patient_status stream 2", status(2), "stream")
    bad("patient_status stream 255", status(255), "stream")
    bad("patient_status label not UTF-8", status(0, b"\xc3\x28"), "label")
    bad("patient_status label a UTF-8 surrogate", status(0, b"\xed\xa0\x80"), "label")
    bad("patient_status label with BEL", status(0, b"Bed\x077"), "label")
    bad("patient_status label with DEL", status(0, b"Bed\x7f7"), "label")
    bad("patient_status label with C1 NEL", status(0, "Bed\u00857".encode()), "label")
    bad("patient_status label with a newline", status(0, b"Bed\n7"), "label")
    bad("patient_status subject with a space", status(0, b"", b"Patient/a b"), "subject")
    bad("patient_status subject not ASCII", status(0, b"", b"Patient/\xff"), "subject")
    bad("patient_status subject with a control char", status(0, b"", b"Patient/\x01"), "subject")
    bad("patient_status hr_source upper case", status(0, b"", b"", b"ECG"), "hr-source")
    bad("patient_status hr_source of 33 bytes", status(0, b"", b"", b"a" * 33), "hr-source")
    bad("patient_status hr_source with a dot", status(0, b"", b"", b"ecg.v2"), "hr-source")
    bad("patient_status hr_source not ASCII", status(0, b"", b"", b"\xc3\xa9"), "hr-source")
    bad(
        "patient_status bad stream, label cut short",
        head + b"\x02\x05A",
        "stream",
        "stream is checked as soon as it is read",
    )
    bad(
        "patient_status subject not ASCII, hr_source missing",
        head + b"\x00\x00\x01\xff",
        "subject",
        "each string's encoding is checked as it is read",
    )
    bad(
        "patient_status label with BEL and a trailing byte",
        status(0, b"\x07") + b"\x00",
        "trailing",
        "trailing bytes before the content rules of the strings",
    )
    bad(
        "patient_status bad label and bad subject",
        status(0, b"\x07", b" "),
        "label",
        "label before subject before hr_source",
    )
    bad(
        "patient_status bad subject and bad hr_source",
        status(0, b"", b" ", b"X"),
        "subject",
        "label before subject before hr_source",
    )
    return v


def metric(
    code: int = 149530,
    value: bytes = struct.pack(">d", 71.0),
    flags: int = 0,
    unit: bytes = b"/min",
    label: bytes = b"MDC_PULS_OXIM_PULS_RATE",
    pid: bytes = b"bed-7",
) -> bytes:
    return (
        b"\x06\x01"
        + struct.pack(">QI", 1_700_000_000_000_000, code)
        + value
        + bytes([flags])
        + short(unit)
        + short(label)
        + short(pid)
    )


def device(
    state: int = 0,
    protocol: bytes = b"hl7",
    dev: bytes = b"MON-1",
    model: bytes = b"VS-9",
    serial: bytes = b"SN42",
    maker: bytes = b"ACME",
    patient: bytes = b"PID-7",
) -> bytes:
    return (
        b"\x07\x01"
        + struct.pack(">QB", 1_700_000_000_000_000, state)
        + short(protocol)
        + b"".join(short(x) for x in (dev, model, serial, maker, patient))
    )


def device_vectors() -> list[dict[str, Any]]:
    """METRIC (0x06) and DEVICE (0x07), section 7.8 and 7.9: what a bedside device reported."""
    v: list[dict[str, Any]] = []
    t = 1_700_000_000_000_000

    def ok(name: str, data: bytes, msg: dict) -> None:
        v.append({"name": name, "hex": data.hex(), "message": msg})

    def bad(name: str, data: bytes, reason: str, why: str = "") -> None:
        v.append({"name": name, "hex": data.hex(), "error": ["codec", reason], "why": why})

    m = {
        "kind": "metric",
        "time_us": t,
        "code": 149530,
        "value": 71.0,
        "flags": 0,
        "unit": "/min",
        "label": "MDC_PULS_OXIM_PULS_RATE",
        "patient_id": "bed-7",
    }
    ok("metric (section 7.8 example)", metric(), m)
    ok(
        "metric flagged invalid, empty label, largest code, negative value",
        metric(0xFFFFFFFF, struct.pack(">d", -2.5), 1, b"MDC_DIM_X", b""),
        {**m, "code": 0xFFFFFFFF, "value": -2.5, "flags": 1, "unit": "MDC_DIM_X", "label": ""},
    )
    d = {
        "kind": "device",
        "time_us": t,
        "state": 0,
        "protocol": "hl7",
        "device_id": "MON-1",
        "model": "VS-9",
        "serial": "SN42",
        "manufacturer": "ACME",
        "patient_reported": "PID-7",
    }
    ok("device (section 7.9 example)", device(), d)
    ok(
        "device lost, nothing but its id",
        device(1, b"sdc", "urn:uuid:ä".encode(), b"", b"", b"", b""),
        {
            **d,
            "state": 1,
            "protocol": "sdc",
            "device_id": "urn:uuid:ä",
            "model": "",
            "serial": "",
            "manufacturer": "",
            "patient_reported": "",
        },
    )
    bad("metric value is the no-value NaN", metric(value=NAN), "value")
    bad("metric value infinite", metric(value=struct.pack(">d", float("inf"))), "value")
    bad("metric flag bit 1", metric(flags=2), "flags")
    bad("metric unit empty", metric(unit=b""), "unit")
    bad("metric unit with a space", metric(unit=b"mm Hg"), "unit")
    bad("metric unit of 33 bytes", metric(unit=b"u" * 33), "unit")
    bad("metric label of 65 bytes", metric(label=b"L" * 65), "label")
    bad("metric label not printable", metric(label=b"a\x01"), "label")
    bad("metric patient empty", metric(pid=b""), "patient")
    bad("metric cut short", metric()[:-1], "truncated")
    bad("metric trailing byte", metric() + b"\x00", "trailing")
    bad(
        "metric bad flags and bad unit",
        metric(flags=0x80, unit=b""),
        "flags",
        "flags are checked before unit",
    )
    bad(
        "metric bad value, cut short",
        metric(value=NAN)[:-1],
        "truncated",
        "all fields are read before any is validated",
    )
    bad("device state 2", device(2), "state")
    bad("device protocol empty", device(protocol=b""), "protocol")
    bad("device protocol uppercase", device(protocol=b"HL7"), "protocol")
    bad("device id empty", device(dev=b""), "device")
    bad("device model with a newline", device(model=b"a\nb"), "device")
    bad("device serial not UTF-8", device(serial=b"\xff"), "device")
    bad("device patient of 65 bytes", device(patient=b"p" * 65), "device")
    bad("device cut short", device()[:-1], "truncated")
    bad("device trailing byte", device() + b"\x00", "trailing")
    bad(
        "device bad state and bad protocol",
        device(9, b""),
        "state",
        "state is checked before protocol",
    )
    return v


def main() -> None:
    doc = {
        "description": (
            "p2pmed wire protocol v1 parsing vectors (docs/protocol.md sections 1, 4 and 7). "
            "frames: whole frames as run-length segments [[hex, repeat], ...] (concatenate "
            "hex * repeat); each has either the decoded header and payload or error = [kind, "
            "reason]. acks: ACK payloads (after decryption) and their decoded fields, or "
            "error. control: PING/PONG/CLOSE/PATH_BIND payloads (after decryption): ok, or "
            "error. vitals: application messages with the decoded message in a neutral form "
            "(fixed-point raw values; null = absent), or error = ['codec', reason]. 'why' "
            "says what a vector pins down (often the order of checks). patient_status: "
            "PATIENT_STATUS (CONTROL command 5, section 7.5) in the same form as vitals; a "
            "section of its own so that a decoder can adopt command 5 separately. devices: "
            "METRIC (0x06) and DEVICE (0x07), section 7.8 and 7.9, in the same form."
        ),
        "version": 1,
        "frames": frame_vectors(),
        "acks": ack_vectors(),
        "control": control_vectors(),
        "vitals": vitals_vectors(),
        "patient_status": patient_status_vectors(),
        "devices": device_vectors(),
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
