"""The page's vitals decoder, ALARM_ACK encoder, ACK codec and relay envelope against Python."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from p2pmed.core.errors import CodecError
from p2pmed.core.reliability import decode_ack, encode_ack
from p2pmed.transport.relay import encode_envelope
from p2pmed.vitals import codec
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

DECODE = (
    "try { const m = M.vitals.decode(unhex(arg));"
    " if (m.samples) m.samples = Array.from(m.samples); return m; }"
    " catch (e) { return {error: e.kind + '/' + e.reason}; }"
)


async def test_numerics_decode_with_suspect_and_absent(blank_page: Page) -> None:
    msg = codec.Numerics(
        1_700_000_000_000_000,
        "pat-é",
        hr_x10=721,
        sys_x10=1205,
        dia_x10=None,
        spo2_x100=9650,
        temp_x100=3712,
        rr_x10=None,
        flags=codec.StatusFlags.SUSPECT_SPO2,
    )
    got = await js(blank_page, DECODE, codec.encode(msg).hex())
    assert got == {
        "kind": "numerics",
        "timestamp_us": 1_700_000_000_000_000,
        "patient_id": "pat-é",
        "flags": int(codec.StatusFlags.SUSPECT_SPO2),
        "values": {
            "hr": 72.1,
            "hr_suspect": False,
            "sys": 120.5,
            "sys_suspect": False,
            "dia": None,
            "dia_suspect": False,
            "spo2": 96.5,
            "spo2_suspect": True,
            "temp": 37.12,
            "temp_suspect": False,
            "rr": None,
            "rr_suspect": False,
        },
    }


async def test_waveform_and_alarm_decode(blank_page: Page) -> None:
    wave = codec.Waveform("MLII", 360, 5, 10_000, 0.005, "mV", (0, -32768, 32767, 200))
    got = await js(blank_page, DECODE, codec.encode(wave).hex())
    assert isinstance(got, dict)
    assert got["samples"] == [0, -32768, 32767, 200]
    assert (got["signal"], got["sample_rate"], got["first_seq"]) == ("MLII", 360, 10_000)
    assert got["scale"] == pytest.approx(0.005)
    alarm = codec.Alarm(
        9,
        codec.Priority.HIGH,
        codec.AlarmState.LATCHED,
        codec.AlarmCategory.TECHNICAL,
        7,
        None,
        "lead-off",
        "p1",
    )
    got = await js(blank_page, DECODE, codec.encode(alarm).hex())
    assert got == {
        "kind": "alarm",
        "alarm_id": 9,
        "priority": 3,
        "state": 1,
        "category": 1,
        "time_us": 7,
        "value": None,
        "condition": "lead-off",
        "patient_id": "p1",
    }


def _hostile() -> list[bytes]:
    good = codec.encode(codec.Numerics(1, "p", hr_x10=1))
    wave = codec.encode(codec.Waveform("II", 250, 1, 0, 0.005, "mV", (1, 2)))
    return [
        b"",
        b"\x01",
        b"\x09\x01",  # unknown kind
        b"\x01\x02" + good[2:],  # unknown version
        good[:-1],  # truncated
        good + b"\x00",  # trailing
        good[:-2] + b"\x80\x00",  # undefined flag bit
        good[:-2] + b"\x08\x00",  # suspect bit on an absent value
        wave.replace(b"\x00\xfa", b"\x00\x10", 1),  # 16 Hz ECG
        bytes(17 * 1024),  # oversized
    ]


@pytest.mark.parametrize("data", _hostile())
async def test_hostile_messages_rejected_like_python(blank_page: Page, data: bytes) -> None:
    with pytest.raises(CodecError) as py:
        codec.decode(data)
    got = await js(blank_page, DECODE, data.hex())
    assert got == {"error": f"codec/{py.value.reason}"}


async def test_alarm_ack_encoding_decodes_in_python(blank_page: Page) -> None:
    got = await js(blank_page, "return hex(M.vitals.encodeAlarmAck(2**40 + 3, 99, 'web-abc_1'));")
    assert codec.decode(bytes.fromhex(str(got))) == codec.AlarmAck(2**40 + 3, 99, "web-abc_1")
    err = await js(
        blank_page,
        "try { M.vitals.encodeAlarmAck(1, 1, 'bad id!'); return null; }"
        " catch (e) { return e.reason; }",
    )
    assert err == "who"


async def test_ack_frames_match_python_codec(blank_page: Page) -> None:
    entries = [(0, 5, []), (2, 100, [(120, 130), (102, 110)])]
    py = encode_ack(4242, 1500, entries)
    got = await js(
        blank_page,
        "const a = M.session.decodeAck(unhex(arg));"
        "return {a, again: hex(M.session.encodeAck(a.largestPn, a.ackDelayUs, a.entries))};",
        py.hex(),
    )
    assert isinstance(got, dict)
    assert got["again"] == py.hex()
    assert decode_ack(bytes.fromhex(got["again"])) == (4242, 1500, entries)


async def test_relay_envelope_both_ways(blank_page: Page) -> None:
    frame = bytes(range(60))
    py = encode_envelope("pat-1", frame)
    got = await js(
        blank_page,
        "const [id, f] = M.signaling.decodeEnvelope(unhex(arg));"
        "return {id, f: hex(f), enc: hex(M.signaling.encodeEnvelope('pat-1', f)),"
        " bad: [unhex(''), unhex('00aa'), unhex('05616263'), unhex('0361 2062'.replace(' ', '')),"
        " unhex('01ff00')].map((b) => M.signaling.decodeEnvelope(b))};",
        py.hex(),
    )
    assert got == {"id": "pat-1", "f": frame.hex(), "enc": py.hex(), "bad": [None] * 5}
