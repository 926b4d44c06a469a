"""The page's frame, ACK, control-payload and vitals decoders against the shared vectors
(tests/vectors/wire_v1.json), in real Chromium. tests/core/test_wire_vectors.py and
tests/vitals/test_codec_vectors.py hold p2pmed to the same file, so the two agree."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page

from p2pmed.core import frame
from p2pmed.core.errors import CodecError, FrameError
from p2pmed.core.events import FrameRejected
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.reliability import decode_ack
from p2pmed.core.session import Session, SessionConfig
from p2pmed.vitals import codec
from tests.vectors.wire import VECTORS, expand, neutral
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

SAFE = 2**53 - 1

# Every vector in one page call; BigInt values (past 2^53) come back as strings.
RUN = """
const big = (x) => JSON.parse(JSON.stringify(x, (k, v) => typeof v === 'bigint' ? String(v) : v));
const out = [];
for (const v of arg.vectors) {
  try { out.push(big(await CHECK(v))); }
  catch (e) { out.push({error: [e.kind, e.reason], message: String(e && e.message)}); }
}
return out;
"""


async def run(page: Page, check: str, vectors: list[dict[str, Any]]) -> list[Any]:
    got = await js(
        page, RUN.replace("CHECK", f"(async (v) => {{ {check} }})"), {"vectors": vectors}
    )
    assert isinstance(got, list) and len(got) == len(vectors)
    return got


def as_js(x: Any) -> Any:
    """What a value looks like after the page's BigInt-to-string step."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return str(x) if x > SAFE else x
    if isinstance(x, list):
        return [as_js(i) for i in x]
    if isinstance(x, dict):
        return {k: as_js(i) for k, i in x.items()}
    return x


def from_js(x: Any) -> Any:
    """An integral JS number past 2^53 is a float (u64 fields come back as strings)."""
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > SAFE:
        return float(x)
    if isinstance(x, list):
        return [from_js(i) for i in x]
    if isinstance(x, dict):
        return {k: from_js(i) for k, i in x.items()}
    return x


def check_all(vectors: list[dict[str, Any]], got: list[Any], want_ok: Any) -> None:
    bad = []
    for v, g in zip(vectors, got, strict=True):
        want = {"error": v["error"]} if "error" in v else want_ok(v)
        g = {"error": g["error"]} if "error" in g else from_js(g)
        if g != want:
            bad.append((v["name"], want, g))
    assert not bad, bad


async def test_frames(blank_page: Page) -> None:
    vs = [{"name": v["name"], "hex": expand(v["bytes"]).hex()} for v in VECTORS["frames"]]
    got = await run(
        blank_page,
        "const {header, payload} = M.frame.decode(unhex(v.hex));"
        " return {header, payload: hex(payload)};",
        vs,
    )
    check_all(
        VECTORS["frames"],
        got,
        lambda v: {"header": as_js(v["header"]), "payload": expand(v["payload"]).hex()},
    )


async def test_acks(blank_page: Page) -> None:
    got = await run(
        blank_page,
        "const a = M.session.decodeAck(unhex(v.payload));"
        " return {largest_pn: a.largestPn, ack_delay_us: a.ackDelayUs, entries: a.entries};",
        VECTORS["acks"],
    )
    check_all(VECTORS["acks"], got, lambda v: as_js(v["ack"]))


async def test_control_payloads(blank_page: Page) -> None:
    got = await run(
        blank_page, "M.session.checkControl(v.type, unhex(v.payload)); return {ok: true};",
        VECTORS["control"],
    )  # fmt: skip
    check_all(VECTORS["control"], got, lambda v: {"ok": True})


NEUTRAL = """
const m = M.vitals.decode(unhex(v.hex));
if (m.kind === 'numerics') {
  const raw = {};
  const names = {hr: 'hr_x10', sys: 'sys_x10', dia: 'dia_x10', spo2: 'spo2_x100',
                 temp: 'temp_x100', rr: 'rr_x10'};
  for (const p of M.vitals.PARAMS) {
    const x = m.values[p.key];
    raw[names[p.key]] = x === null ? null : Math.round(x / p.scale);
  }
  return {kind: m.kind, timestamp_us: m.timestamp_us, patient_id: m.patient_id, ...raw,
          flags: m.flags};
}
if (m.kind === 'waveform') return {...m, samples: Array.from(m.samples)};
return m;
"""


async def test_vitals(blank_page: Page) -> None:
    got = await run(blank_page, NEUTRAL, VECTORS["vitals"])
    check_all(VECTORS["vitals"], got, lambda v: {**as_js(v["message"])})


def _commit(pn: int, cls: int, seq: int, ack: int) -> bytes:
    payload = bytes(range(32))  # any 32 bytes: the responder cannot check a commitment yet
    return frame.encode(
        Header(FrameType.HS_COMMIT, Flags.NONE, MessageClass(cls), 0, pn, seq, ack, 1, 32), payload
    )


HS_CASES = [
    (_commit(0, 0, 0, 0), None),
    (_commit(0, 3, 5, 9), None),  # class, seq and ack of a handshake frame are ignored
    (_commit(1, 0, 0, 0), ("frame", "pn")),  # the pn must be the step number
]


def _python_responder(data: bytes) -> tuple[list[tuple[str, str]], int]:
    s = Session(SessionConfig("sess-hs", False, Identity.generate()), now=0.0)
    s.add_path("relay", 0.0)
    s.receive(data, "relay", 0.0)
    rejected = [
        (e.kind, e.reason) for e in iter(s.next_event, None) if isinstance(e, FrameRejected)
    ]
    replies = [f for _, f in s.datagrams_to_send(0.0) if f[1] == FrameType.HS_REPLY]
    return rejected, len(replies)


@pytest.mark.parametrize(("data", "error"), HS_CASES, ids=["zero", "class-seq-ack-set", "wrong-pn"])
async def test_handshake_frame_header_checks_agree(
    blank_page: Page, data: bytes, error: tuple[str, str] | None
) -> None:
    got = await js(
        blank_page,
        """
const id = await M.identity.Identity.generate();
const out = [], evs = [];
const s = new M.session.Session({sessionId: 'sess-hs', identity: id, now: () => 0,
  transmit: (p, f) => out.push(f[1]), onEvent: (e) => evs.push(e)});
s.addPath('relay');
await s.receive(unhex(arg), 'relay');
return {rejected: evs.filter((e) => e.type === 'frame-rejected').map((e) => [e.kind, e.reason]),
        replies: out.filter((t) => t === 0x11).length};
""",
        data.hex(),
    )
    want_rejected = [] if error is None else [error]
    assert got == {"rejected": [list(e) for e in want_rejected], "replies": 0 if error else 1}
    assert _python_responder(data) == (want_rejected, 0 if error else 1)


def _mutants() -> list[dict[str, Any]]:
    """Every truncation and many one-byte changes of each valid vitals vector, with what
    the Python codec says about them: the page must say the same."""
    out: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for v in VECTORS["vitals"]:
        if "message" not in v:
            continue
        data = bytes.fromhex(v["hex"])
        cases = [data[:n] for n in range(len(data))] + [data + b"\x00"]
        for i in range(len(data)):
            for x in (0x00, 0x01, 0x07, 0x20, 0x41, 0x7F, 0x80, 0xC3, 0xFF, data[i] ^ 1):
                cases.append(data[:i] + bytes([x]) + data[i + 1 :])
        for case in cases:
            if case in seen:
                continue
            seen.add(case)
            try:
                want: dict[str, Any] = {"message": neutral(codec.decode(case))}
            except CodecError as e:
                want = {"error": [e.kind, e.reason]}
            out.append({"name": case.hex(), "hex": case.hex(), **want})
    return out


async def test_vitals_mutants_agree_with_python(blank_page: Page) -> None:
    mutants = _mutants()
    assert len(mutants) > 2000
    assert sum("message" in m for m in mutants) > 100  # some mutants are valid messages
    got = await run(blank_page, NEUTRAL, mutants)
    check_all(mutants, got, lambda v: {**as_js(v["message"])})


def _ack_mutants() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    for v in VECTORS["acks"]:
        if "ack" not in v:
            continue
        data = bytes.fromhex(v["payload"])
        cases = [data[:n] for n in range(len(data))] + [data + b"\x00"]
        for i in range(min(len(data), 120)):
            for x in (0x00, 0x01, 0x05, 0x21, 0xFF, data[i] ^ 1):
                cases.append(data[:i] + bytes([x]) + data[i + 1 :])
        for case in cases:
            if case in seen:
                continue
            seen.add(case)
            try:
                largest, delay, entries = decode_ack(case)
                want: dict[str, Any] = {
                    "ack": {
                        "largest_pn": largest,
                        "ack_delay_us": delay,
                        "entries": [
                            {"cls": c, "cumulative": cum, "ranges": [list(r) for r in rs]}
                            for c, cum, rs in entries
                        ],
                    }
                }
            except FrameError as e:
                want = {"error": [e.kind, e.reason]}
            out.append({"name": case.hex(), "payload": case.hex(), **want})
    return out


async def test_ack_mutants_agree_with_python(blank_page: Page) -> None:
    mutants = _ack_mutants()
    assert len(mutants) > 1000
    assert sum("ack" in m for m in mutants) > 100
    got = await run(
        blank_page,
        "const a = M.session.decodeAck(unhex(v.payload));"
        " return {largest_pn: a.largestPn, ack_delay_us: a.ackDelayUs, entries: a.entries};",
        mutants,
    )
    check_all(mutants, got, lambda v: as_js(v["ack"]))


def _frame_mutants() -> list[dict[str, Any]]:
    """Header bytes changed with the CRC fixed up (so the header checks are reached)."""
    out: list[dict[str, Any]] = []
    for v in VECTORS["frames"][:4]:
        data = expand(v["bytes"])
        for i in range(frame.HEADER_SIZE):
            for x in (0x00, 0x01, 0x02, 0x05, 0x10, 0x13, 0x80, 0xFF):
                body = data[:i] + bytes([x]) + data[i + 1 : -4]
                case = body + frame.crc32(body).to_bytes(4, "big")
                try:
                    h, p = frame.decode(case)
                    fields = ("type", "flags", "cls", "epoch", "pn", "seq", "ack", "timestamp_us")
                    want: dict[str, Any] = {
                        "header": {k: int(getattr(h, k)) for k in (*fields, "length")},
                        "payload": p.hex(),
                    }
                except FrameError as e:
                    want = {"error": [e.kind, e.reason]}
                out.append({"name": case.hex(), "hex": case.hex(), **want})
    return out


async def test_frame_mutants_agree_with_python(blank_page: Page) -> None:
    mutants = _frame_mutants()
    got = await run(
        blank_page,
        "const {header, payload} = M.frame.decode(unhex(v.hex));"
        " return {header, payload: hex(payload)};",
        mutants,
    )
    check_all(mutants, got, lambda v: {"header": as_js(v["header"]), "payload": v["payload"]})
