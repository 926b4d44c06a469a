"""The page's session core against the Python Session (sans-IO), bridged frame by frame.

The Python side is the initiator (as the patient node is); the page is the responder. Two paths,
"direct" and "relay", are carried by this test so it can drop, copy and tamper with frames.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page

from p2pmed.core import events as ev
from p2pmed.core import frame
from p2pmed.core.frame import MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.reliability import decode_ack
from p2pmed.core.session import Session, SessionConfig
from p2pmed.vitals import codec
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGE_SETUP = """
const id = await M.identity.Identity.generate();
window.out = []; window.evs = [];
const s = new M.session.Session({sessionId: arg, identity: id, now: () => performance.now() / 1000,
  transmit: (p, f) => window.out.push([p, hex(f)]),
  onEvent: (e) => window.evs.push(e.type === 'message'
    ? {type: 'message', cls: e.cls, seq: e.seq, path: e.path, data: hex(e.data), sentUs: e.sentUs}
    : JSON.parse(JSON.stringify(e)))});
s.addPath('direct', {preferred: true}); s.addPath('relay');
window.sess = s; window.myFp = await id.fingerprint();
clearInterval(window.ticker); window.ticker = setInterval(() => s.tick(), 50);
return window.myFp;
"""


class Bridge:
    def __init__(self, page: Page, session_id: str) -> None:
        self.page = page
        self.identity = Identity.generate()
        self.py = Session(
            SessionConfig(session_id=session_id, initiator=True, identity=self.identity),
            now=time.time(),
        )
        self.py.add_path("direct", time.time(), preferred=True)
        self.py.add_path("relay", time.time())
        self.dropped: set[str] = set()  # paths cut in both directions
        self.py_events: list[Any] = []
        self.tamper_next = False
        self.data_pns: set[int] = set()  # pns of the DATA frames sent to the page

    async def pump(self, seconds: float, until: Any = None) -> None:
        """Move frames both ways for up to `seconds` (bounded), or until until() is true."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            now = time.time()
            timer = self.py.get_timer()
            if timer is not None and timer <= now:
                self.py.handle_timer(now)
            to_page = []
            for path, data in self.py.datagrams_to_send(now):
                if path in self.dropped:
                    continue
                if self.tamper_next and data[1] == frame.FrameType.DATA:
                    self.tamper_next = False
                    b = bytearray(data)
                    b[frame.HEADER_SIZE + 1] ^= 0x80
                    body = bytes(b[:-4])
                    data = body + frame.crc32(body).to_bytes(4, "big")
                if data[1] == frame.FrameType.DATA:
                    self.data_pns.add(frame.decode(data)[0].pn)
                to_page.append([path, data.hex()])
            got = await self.page.evaluate(
                "async (frames) => { for (const [p, h] of frames)"
                " window.sess.receive(M_unhex(h), p); await window.sess.chain;"
                " return window.out.splice(0); }".replace(
                    "M_unhex", "((h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16))))"
                ),
                to_page,
            )
            now = time.time()
            for path, h in got:
                if path not in self.dropped:
                    self.py.receive(bytes.fromhex(h), path, now)
            while (e := self.py.next_event()) is not None:
                self.py_events.append(e)
            if until is not None and until():
                return
            await asyncio.sleep(0.01)

    async def page_events(self) -> list[dict[str, Any]]:
        return await self.page.evaluate("window.evs")  # type: ignore[no-any-return]

    async def page_stats(self) -> dict[str, int]:
        return await self.page.evaluate("window.sess.stats")  # type: ignore[no-any-return]


async def _bridge(page: Page, session_id: str) -> tuple[Bridge, str]:
    b = Bridge(page, session_id)
    page_fp = await js(page, PAGE_SETUP, session_id)
    b.py.connect(time.time())
    await b.pump(10, until=lambda: b.py.state.name == "ESTABLISHED")
    await b.pump(0.3)
    return b, str(page_fp)


def _numerics(i: int) -> bytes:
    return codec.encode(
        codec.Numerics(1_700_000_000_000_000 + i, "pat-1", hr_x10=600 + i, spo2_x100=9700)
    )


async def test_handshake_with_python_initiator(blank_page: Page) -> None:
    b, page_fp = await _bridge(blank_page, "interop-hs")
    evs = await b.page_events()
    done = [e for e in evs if e["type"] == "handshake-completed"]
    assert len(done) == 1
    assert done[0]["sas"] == b.py.sas
    assert done[0]["peerFingerprint"] == b.identity.fingerprint()
    assert b.py.peer_fingerprint == page_fp
    stats = await b.page_stats()
    assert stats["frames_rejected"] == 0


async def test_messages_exactly_once_in_order_and_acked(blank_page: Page) -> None:
    b, _ = await _bridge(blank_page, "interop-data")
    now = time.time()
    ids = [b.py.send(MessageClass.MEDIUM, _numerics(i), now) for i in range(200)]
    big = bytes(range(256)) * 160  # 40 KiB: three chunks
    ids.append(b.py.send(MessageClass.LOW, big, now))
    ids.append(b.py.send(MessageClass.CRITICAL, b"\x03critical", now))

    def all_acked() -> bool:
        acked = {e.message_id for e in b.py_events if isinstance(e, ev.MessageAcked)}
        return set(ids) <= acked

    await b.pump(15, until=all_acked)
    assert all_acked()
    msgs = [e for e in await b.page_events() if e["type"] == "message"]
    medium = [m for m in msgs if m["cls"] == MessageClass.MEDIUM]
    assert [bytes.fromhex(m["data"]) for m in medium] == [_numerics(i) for i in range(200)]
    seqs = [m["seq"] for m in medium]  # small messages share BATCH frames: seq per frame
    assert seqs == sorted(seqs)
    low = [m for m in msgs if m["cls"] == MessageClass.LOW]
    assert len(low) == 1 and bytes.fromhex(low[0]["data"]) == big
    crit = [m for m in msgs if m["cls"] == MessageClass.CRITICAL]
    assert [bytes.fromhex(m["data"]) for m in crit] == [b"\x03critical"]
    # the CRITICAL frame came on both paths: the copy is a duplicate, not a rejected frame
    stats = await b.page_stats()
    assert stats["frames_rejected"] == 0
    assert stats.get("duplicate_frames", 0) >= 1


async def test_page_alarm_ack_reaches_python_and_is_acked(blank_page: Page) -> None:
    b, _ = await _bridge(blank_page, "interop-ack")
    seq = await blank_page.evaluate(
        "async () => { const v = await import('/static/js/vitals.js');"
        " const body = v.encodeAlarmAck(77, 1700000000000000, 'web-1');"
        " return await window.sess.sendMessage(0, body); }"
    )

    def got_ack() -> bool:
        return any(isinstance(e, ev.MessageReceived) for e in b.py_events)

    await b.pump(10, until=got_ack)
    received = [e for e in b.py_events if isinstance(e, ev.MessageReceived)]
    assert len(received) == 1
    msg = codec.decode(received[0].data)
    assert msg == codec.AlarmAck(77, 1_700_000_000_000_000, "web-1")
    assert received[0].cls == MessageClass.CRITICAL

    async def page_acked() -> bool:
        return any(
            e["type"] == "acked" and e["seq"] == seq and e["cls"] == 0
            for e in await b.page_events()
        )

    for _ in range(100):
        await b.pump(0.05)
        if await page_acked():
            break
    assert await page_acked()


async def test_tampered_frame_rejected_and_counted_delivery_unharmed(blank_page: Page) -> None:
    b, _ = await _bridge(blank_page, "interop-tamper")
    b.tamper_next = True
    now = time.time()
    ids = [b.py.send(MessageClass.MEDIUM, _numerics(i), now) for i in range(5)]
    await b.pump(
        10,
        until=lambda: (
            set(ids) <= {e.message_id for e in b.py_events if isinstance(e, ev.MessageAcked)}
        ),
    )
    stats = await b.page_stats()
    assert stats["frames_rejected_auth"] == 1
    rejected = [e for e in await b.page_events() if e["type"] == "frame-rejected"]
    assert rejected == [
        {"type": "frame-rejected", "kind": "crypto", "reason": "auth", "path": "direct"}
    ]
    msgs = [e for e in await b.page_events() if e["type"] == "message"]
    assert [bytes.fromhex(m["data"]) for m in msgs] == [_numerics(i) for i in range(5)]


async def test_direct_cut_moves_to_relay_and_back_without_gap(blank_page: Page) -> None:
    b, _ = await _bridge(blank_page, "interop-failover")
    sent = 0

    async def send_for(seconds: float) -> None:
        nonlocal sent
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            for _ in range(5):
                b.py.send(MessageClass.MEDIUM, _numerics(sent), time.time())
                sent += 1
            await b.pump(0.05)

    await send_for(0.5)
    b.dropped.add("direct")
    await send_for(2.5)
    assert not b.py.path_status("direct").alive
    assert not (await blank_page.evaluate("window.sess.pathStatus('direct')"))["alive"]
    assert await blank_page.evaluate("window.sess.bestPath()") == "relay"
    b.dropped.discard("direct")
    b.py.add_path("direct", time.time(), preferred=True)  # the node re-adds a renegotiated path
    await send_for(1.0)
    await b.pump(5, until=lambda: b.py.path_status("direct").alive)
    await b.pump(1.0)
    msgs = [e for e in await b.page_events() if e["type"] == "message"]
    assert [bytes.fromhex(m["data"]) for m in msgs] == [_numerics(i) for i in range(sent)]
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs)
    assert sorted(set(seqs)) == list(range(seqs[0], seqs[-1] + 1))  # no frame seq missing
    paths = {m["path"] for m in msgs}
    assert paths == {"direct", "relay"}
    assert msgs[-1]["path"] == "direct"
    assert await blank_page.evaluate("window.sess.bestPath()") == "direct"


async def test_hostile_input_is_counted_never_delivered_or_fatal(blank_page: Page) -> None:
    b, _ = await _bridge(blank_page, "interop-hostile")
    now = time.time()
    b.py.send(MessageClass.MEDIUM, _numerics(0), now)
    captured: list[bytes] = []
    for _, data in b.py.datagrams_to_send(now):
        captured.append(data)
    data_frame = next(f for f in captured if f[1] == frame.FrameType.DATA)
    same_pn_other_bytes = bytearray(data_frame)
    same_pn_other_bytes[frame.HEADER_SIZE + 2] ^= 0xFF
    body = bytes(same_pn_other_bytes[:-4])
    replayed_forgery = body + frame.crc32(body).to_bytes(4, "big")
    hostile = [
        data_frame,  # the genuine frame once
        data_frame,  # a byte-identical copy (as on a second path): dropped as a duplicate
        replayed_forgery,  # same pn, other bytes: replay
        b"",
        b"\x00" * 47,
        bytes(range(256)) * 253,  # oversized (64768 > 64576)
        data_frame[:-1] + bytes([data_frame[-1] ^ 1]),  # bad CRC
    ]
    await blank_page.evaluate(
        "async (frames) => { for (const h of frames) window.sess.receive("
        "new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16))), 'relay');"
        " await window.sess.chain; }",
        [f.hex() for f in hostile],
    )
    stats = await b.page_stats()
    assert stats["frames_rejected_replay"] == 1
    assert stats["frames_rejected_truncated"] == 2
    assert stats["frames_rejected_oversized"] == 1
    assert stats["frames_rejected_crc"] == 1
    assert stats["duplicate_frames"] >= 1
    msgs = [e for e in await b.page_events() if e["type"] == "message"]
    assert [bytes.fromhex(m["data"]) for m in msgs] == [_numerics(0)]
    # and the session still works afterwards
    ids = [b.py.send(MessageClass.MEDIUM, _numerics(1), time.time())]
    await b.pump(
        10,
        until=lambda: (
            set(ids) <= {e.message_id for e in b.py_events if isinstance(e, ev.MessageAcked)}
        ),
    )
    msgs = [e for e in await b.page_events() if e["type"] == "message"]
    assert [bytes.fromhex(m["data"]) for m in msgs] == [_numerics(0), _numerics(1)]


async def test_page_ack_reports_largest_data_pn(blank_page: Page) -> None:
    """largest_pn of an ACK is the largest pn of a DATA frame received, never a PING's, so the
    node gets RTT samples from the page's ACKs."""
    b, _ = await _bridge(blank_page, "interop-largest")
    await blank_page.evaluate(
        "() => { window.acks = []; const s = window.sess, send = s._sendControl.bind(s);"
        " s._sendControl = (t, body, p) => { if (t === 2) window.acks.push(M_hex(body));"
        " return send(t, body, p); }; }".replace(
            "M_hex", "((b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(''))"
        )
    )
    for i in range(20):
        # a DATA frame, then a PING built after it (higher pn), delivered together
        now = time.time()
        b.py.send(MessageClass.MEDIUM, _numerics(i), now)
        out = b.py.datagrams_to_send(now)
        b.py._heartbeat.queue_ping("direct", now)
        out += b.py.datagrams_to_send(now)
        b.data_pns |= {frame.decode(f)[0].pn for _, f in out if f[1] == frame.FrameType.DATA}
        await blank_page.evaluate(
            "async (frames) => { for (const h of frames) window.sess.receive("
            "new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16))), 'direct');"
            " await window.sess.chain; await new Promise((r) => setTimeout(r, 5)); }",
            [f.hex() for p, f in out if p == "direct"],
        )
        await b.pump(0.02)
    acks = [decode_ack(bytes.fromhex(h)) for h in await blank_page.evaluate("window.acks")]
    assert len(acks) >= 10
    assert {largest for largest, _, _ in acks} <= b.data_pns
    assert b.py._recovery.rtt.srtt is not None


async def test_page_resend_keeps_the_message_timestamp(blank_page: Page) -> None:
    """The DATA header timestamp is when the message was queued, on every resend too."""
    b, _ = await _bridge(blank_page, "interop-resend-ts")
    b.dropped |= {"direct", "relay"}
    queued_us = time.time() * 1e6
    await blank_page.evaluate(
        "async () => { const v = await import('/static/js/vitals.js');"
        " await window.sess.sendMessage(1, v.encodeAlarmAck(5, 1700000000000000, 'web-1')); }"
    )
    await b.pump(1.0)  # the page resends (RTO 0.3 s) into the cut paths
    assert (await b.page_stats())["retransmits"] >= 1
    b.dropped.clear()
    reopened_us = time.time() * 1e6  # every copy that gets through is built after this

    def got() -> bool:
        return any(isinstance(e, ev.MessageReceived) for e in b.py_events)

    await b.pump(10, until=got)
    received = [e for e in b.py_events if isinstance(e, ev.MessageReceived)]
    assert len(received) == 1
    ts = received[0].sent_timestamp_us
    assert queued_us - 1e6 < ts < reopened_us - 0.5e6  # the queue time, not the resend time
