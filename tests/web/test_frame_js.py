"""The page's frame codec and CRC against p2pmed.core.frame, in real Chromium."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from p2pmed.core import frame
from p2pmed.core.errors import FrameError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _frame(payload: bytes = b"hello vitals", **kw: object) -> bytes:
    fields: dict[str, object] = dict(
        type=FrameType.DATA,
        flags=Flags.FIRST | Flags.LAST,
        cls=MessageClass.HIGH,
        epoch=1,
        pn=7,
        seq=3,
        ack=2,
        timestamp_us=1_700_000_000_123_456,
        length=len(payload),
    )
    fields.update(kw)
    return frame.encode(Header(**fields), payload)  # type: ignore[arg-type]


async def test_crc_check_value(blank_page: Page) -> None:
    got = await js(blank_page, "return M.crc32.crc32(new TextEncoder().encode('123456789'));")
    assert got == 0xCBF43926


async def test_crc_matches_zlib_on_all_byte_values(blank_page: Page) -> None:
    data = bytes(range(256)) * 5 + b"\x00\xff"
    got = await js(blank_page, "return M.crc32.crc32(unhex(arg));", data.hex())
    assert got == frame.crc32(data)


async def test_python_frame_decodes_in_page(blank_page: Page) -> None:
    data = _frame(b"\x00\x01payload", pn=2**40 + 5, seq=123456789, ack=99)
    got = await js(
        blank_page,
        "const {header, payload} = M.frame.decode(unhex(arg));"
        "return {...header, payload: hex(payload)};",
        data.hex(),
    )
    assert got == {
        "type": 1,
        "flags": 3,
        "cls": 1,
        "epoch": 1,
        "pn": 2**40 + 5,
        "seq": 123456789,
        "ack": 99,
        "timestamp_us": 1_700_000_000_123_456,
        "length": 9,
        "payload": b"\x00\x01payload".hex(),
    }


async def test_page_frame_decodes_in_python(blank_page: Page) -> None:
    got = await js(
        blank_page,
        "const p = new TextEncoder().encode('from the page');"
        "return hex(M.frame.encode({type: 0x10, flags: 0, cls: 0, epoch: 0, pn: 3, seq: 0,"
        " ack: 0, timestamp_us: 1700000000000001, length: p.length}, p));",
    )
    header, payload = frame.decode(bytes.fromhex(str(got)))
    assert header == Header(
        FrameType.HS_COMMIT, Flags.NONE, MessageClass.CRITICAL, 0, 3, 0, 0, 1700000000000001, 13
    )
    assert payload == b"from the page"


def _corrupt(data: bytes, at: int, value: int) -> bytes:
    b = bytearray(data)
    b[at] = value
    body = bytes(b[:-4])
    return body + frame.crc32(body).to_bytes(4, "big")


GOOD = _frame()
HOSTILE = [
    (GOOD[:10], "truncated"),
    (GOOD + bytes(frame.MAX_FRAME), "oversized"),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "crc"),
    (bytes([GOOD[0], GOOD[1] ^ 0x40]) + GOOD[2:], "crc"),
    (_corrupt(GOOD, 0, 2), "version"),
    (_corrupt(GOOD, 1, 0x7F), "type"),
    (_corrupt(GOOD, 3, 9), "class"),
    (_corrupt(GOOD, 2, 0x80), "flags"),
    (_corrupt(GOOD, 7, 0), "epoch"),
    (_corrupt(GOOD, 43, 200), "length"),
    (_corrupt(_frame(type=FrameType.HS_COMMIT, epoch=0), 7, 1), "epoch"),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
async def test_hostile_frames_rejected_with_python_reasons(
    blank_page: Page, data: bytes, reason: str
) -> None:
    with pytest.raises(FrameError) as py:
        frame.decode(data)
    assert py.value.reason == reason
    got = await js(
        blank_page,
        "try { M.frame.decode(unhex(arg)); return null; }"
        " catch (e) { return {kind: e.kind, reason: e.reason}; }",
        data.hex(),
    )
    assert got == {"kind": "frame", "reason": reason}
