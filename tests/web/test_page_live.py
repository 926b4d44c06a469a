"""The clinician page in a live session with a patient endpoint over the real relay.

One page and one patient per module: the tests run in order on the same session.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from p2pmed.core import frame
from p2pmed.core.frame import MessageClass
from p2pmed.vitals import codec
from signaling.testing import RunningServer, running_server
from tests.web.relay_patient import RelayPatient, flip_ciphertext_bit

pytestmark = pytest.mark.asyncio(loop_scope="module")

RATE = 250
CHUNK = 25  # samples per WAVEFORM message (100 ms)


def ecg_mv(i: int) -> float:
    """A crude PQRST beat at 75 /min: enough to see a moving trace."""
    t = (i % 200) / RATE
    return (
        1.2 * math.exp(-(((t - 0.30) / 0.012) ** 2))
        + 0.15 * math.exp(-(((t - 0.12) / 0.03) ** 2))
        + 0.3 * math.exp(-(((t - 0.55) / 0.05) ** 2))
    )


@dataclass
class Live:
    server: RunningServer
    page: Page
    patient: RelayPatient
    sent_numerics: list[codec.Numerics]
    numerics_on: list[bool]


async def _feed(p: RelayPatient, sent: list[codec.Numerics], on: list[bool]) -> None:
    seq = 0
    pseq = 0
    n = 0
    next_t = time.time()
    while True:
        now_us = int(time.time() * 1e6)
        ecg = tuple(round(ecg_mv(seq + i) / 0.005) for i in range(CHUNK))
        p.send(
            MessageClass.MEDIUM,
            codec.encode(codec.Waveform("II", RATE, now_us, seq, 0.005, "mV", ecg)),
        )
        count = (seq + CHUNK) // 2 - pseq  # 125 Hz: 12 or 13 samples per 100 ms
        pleth = tuple(round(1000 * math.sin((pseq + i) / 20)) for i in range(count))
        p.send(
            MessageClass.MEDIUM,
            codec.encode(codec.Waveform("PLETH", 125, now_us, pseq, 0.001, "1", pleth)),
        )
        pseq += count
        if n % 10 == 0 and on[0]:
            flags = codec.StatusFlags.SUSPECT_SPO2 if n >= 40 else codec.StatusFlags.NONE
            num = codec.Numerics(
                now_us,
                "pat-1",
                hr_x10=720 + n // 10,
                sys_x10=1200,
                dia_x10=800,
                spo2_x100=9700,
                temp_x100=3690,
                rr_x10=160,
                flags=flags,
            )
            sent.append(num)
            p.send(MessageClass.MEDIUM, codec.encode(num))
        seq += CHUNK
        n += 1
        next_t += CHUNK / RATE
        await asyncio.sleep(max(0.0, next_t - time.time()))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(browser: Browser) -> AsyncIterator[Live]:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-live-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(srv.join_url(srv.mint("s-live", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            token = srv.mint("s-live", "patient")
            async with RelayPatient(srv.ws_url, token) as patient:
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                sent: list[codec.Numerics] = []
                on = [True]
                feeder = asyncio.create_task(_feed(patient, sent, on))
                yield Live(srv, page, patient, sent, on)
                feeder.cancel()
            await ctx.close()
            assert not errors, errors


async def test_sas_shown_and_can_be_marked_verified(live: Live) -> None:
    page = live.page
    assert live.patient.session is not None
    await expect(page.locator("#sas")).to_have_text(live.patient.session.sas, timeout=5_000)
    peer_fp = live.patient.identity.fingerprint()
    await expect(page.locator("#peer-fp")).to_have_text(peer_fp)
    assert live.patient.session.peer_fingerprint == await page.locator("#my-fp").text_content()
    btn = page.get_by_role("button", name="Mark verified")
    await btn.click()
    await expect(page.locator("#verify-state")).to_have_text("Verified by you")
    # the button is disabled now: focus is on the result, not on <body>
    assert await page.evaluate("document.activeElement.id") == "verify-state"


async def test_numerics_on_screen_match_what_the_patient_sent(live: Live) -> None:
    page = live.page
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=5_000)
    for _ in range(50):
        last = live.sent_numerics[-1]
        shown = await page.locator("#val-hr").text_content()
        if shown == f"{last.value(codec.Param.HR):.0f}":
            break
        await asyncio.sleep(0.1)
    last = live.sent_numerics[-1]
    assert shown == f"{last.value(codec.Param.HR):.0f}"
    await expect(page.locator("#val-bp")).to_have_text("120/80")
    await expect(page.locator("#val-temp")).to_have_text("36.9")
    await expect(page.locator("#val-rr")).to_have_text("16")
    await expect(page.locator("#val-spo2")).to_have_text("97")
    await expect(page.locator("#conn-state")).to_have_text("Live via relay")
    await expect(page.locator("#st-path")).to_have_text("relay")


async def test_ecg_trace_is_drawn_and_moves(live: Live) -> None:
    page = live.page
    await expect(page.locator("#ecg-status")).to_have_text("250 Hz", timeout=5_000)
    assert await page.evaluate("window.p2pmed.metrics.firstEcgDrawnMs") is not None
    a = await page.locator("#ecg").screenshot()
    await asyncio.sleep(0.5)
    b = await page.locator("#ecg").screenshot()
    assert a != b
    drawn = await page.evaluate(
        "(() => { const c = document.getElementById('ecg'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 1; i < d.length; i += 4) if (d[i] > 100) n++; return n; })()"
    )
    assert drawn > 500  # green trace pixels
    assert await page.evaluate("window.p2pmed.metrics.ecgSourceGaps") == 0


async def test_suspect_value_is_greyed_and_marked(live: Live) -> None:
    page = live.page
    await expect(page.locator("#tile-spo2")).to_have_attribute(
        "data-state", "suspect", timeout=8_000
    )
    await expect(page.locator("#mark-spo2")).to_have_text("? SUSPECT")
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live")


async def test_numerics_that_stop_coming_turn_stale(live: Live) -> None:
    page = live.page
    live.numerics_on[0] = False
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "stale", timeout=6_000)
    await expect(page.locator("#mark-hr")).to_have_text("STALE")
    await expect(page.locator("#ecg-status")).to_have_text("250 Hz")  # the waveform is still live
    live.numerics_on[0] = True
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=3_000)


async def test_alarm_shown_by_priority_and_acknowledged_end_to_end(live: Live) -> None:
    page = live.page
    p = live.patient
    now_us = int(time.time() * 1e6)
    high = codec.Alarm(
        41,
        codec.Priority.HIGH,
        codec.AlarmState.ACTIVE,
        codec.AlarmCategory.PHYSIOLOGICAL,
        now_us,
        148.0,
        "hr-high",
        "pat-1",
    )
    low = codec.Alarm(
        42,
        codec.Priority.LOW,
        codec.AlarmState.ACTIVE,
        codec.AlarmCategory.TECHNICAL,
        now_us,
        None,
        "low-battery",
        "pat-1",
    )
    p.send(MessageClass.CRITICAL, codec.encode(low))
    p.send(MessageClass.CRITICAL, codec.encode(high))
    item = page.locator('#alarm-list li[data-alarm-id="41"]')
    await expect(item).to_have_class("alarm alarm-high", timeout=5_000)
    await expect(page.locator('#alarm-list li[data-alarm-id="42"]')).to_have_class(
        "alarm alarm-low alarm-technical"
    )
    first = page.locator("#alarm-list li").first
    await expect(first).to_have_attribute("data-alarm-id", "41")  # high priority on top
    anim = await item.evaluate("(el) => getComputedStyle(el).animationName")
    assert anim == "flash-high"
    # keyboard only: Tab reaches the Acknowledge button, Enter presses it
    await page.locator("body").focus()
    for _ in range(30):
        await page.keyboard.press("Tab")
        label = await page.evaluate("document.activeElement.getAttribute('aria-label')")
        if label == "Acknowledge high priority alarm hr-high":
            break
    assert label == "Acknowledge high priority alarm hr-high"
    await page.keyboard.press("Enter")
    # focus moves on to the next alarm to acknowledge (the low one), not to <body>
    focused = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == "Acknowledge low priority alarm low-battery"

    def got_ack() -> bool:
        return any(isinstance(codec.decode(m.data), codec.AlarmAck) for m in p.received())

    await p.wait(got_ack)
    acks = [codec.decode(m.data) for m in p.received()]
    ack = next(a for a in acks if isinstance(a, codec.AlarmAck))
    eid = await page.evaluate("sessionStorage.getItem('p2pmed-endpoint')")
    assert (ack.alarm_id, ack.who) == (41, eid)
    await expect(item).to_have_attribute("data-ack-delivered", "true", timeout=5_000)
    await expect(item.locator(".ack-state")).to_have_text("✓ acknowledged by you — delivered to patient node")


async def test_tampered_frame_is_rejected_counted_and_shown(live: Live) -> None:
    page = live.page
    before = await page.evaluate("window.p2pmed.metrics.rejected")
    live.patient.mutate = flip_ciphertext_bit
    await expect(page.locator("#rejected-note")).to_be_visible(timeout=5_000)
    await expect(page.locator("#rejected-note")).to_contain_text("crypto/auth")
    assert await page.evaluate("window.p2pmed.metrics.rejected") == before + 1
    await expect(page.locator("#st-rejected")).to_have_text(str(before + 1))
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live")


async def test_lost_connection_is_obvious_then_recovers(live: Live) -> None:
    page = live.page
    live.patient.paused = True
    await expect(page.locator("#lost-banner")).to_be_visible(timeout=3_000)
    await expect(page.locator("#conn-state")).to_have_text("CONNECTION LOST")
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "stale")
    await expect(page.locator("#mark-hr")).to_have_text("NOT LIVE")
    await expect(page.locator("#ecg-status")).to_contain_text(
        "NOT LIVE — connection lost, last data"
    )
    tech = page.locator('#alarm-list li[data-key="tech:all-paths-down"]')
    await expect(tech).to_contain_text("TECHNICAL ALARM")
    live.patient.paused = False
    await expect(page.locator("#lost-banner")).to_be_hidden(timeout=8_000)
    await expect(tech).to_have_count(0)
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=5_000)
    # nothing lost: the ECG sample sequence has no hole after the outage
    await asyncio.sleep(0.5)
    assert await page.evaluate("window.p2pmed.metrics.ecgSourceGaps") == 0


async def test_alarm_stays_signalled_until_the_ack_is_confirmed(live: Live) -> None:
    page = live.page
    p = live.patient
    alarm = codec.Alarm(
        51,
        codec.Priority.HIGH,
        codec.AlarmState.ACTIVE,
        codec.AlarmCategory.PHYSIOLOGICAL,
        int(time.time() * 1e6),
        41.0,
        "spo2-low",
        "pat-1",
    )
    p.send(MessageClass.CRITICAL, codec.encode(alarm))
    item = page.locator('#alarm-list li[data-alarm-id="51"]')
    await expect(item).to_have_class("alarm alarm-high", timeout=5_000)
    p.paused = True  # the acknowledgement cannot reach the patient node
    await item.get_by_role("button", name="Acknowledge high priority alarm spo2-low").click()
    await expect(item).to_have_attribute("data-ack", "sending")
    await expect(item.locator(".ack-state")).to_have_text("sending…")
    await expect(item.get_by_role("button")).to_have_text("Acknowledging…")
    # not acknowledged yet: still flashing
    assert await item.evaluate("(el) => getComputedStyle(el).animationName") == "flash-high"
    # the connection drops: the ack is shown as failed, the alarm is still signalled
    await expect(item).to_have_attribute("data-ack", "failed", timeout=5_000)
    await expect(item.locator(".ack-state")).to_contain_text("✗ not delivered: connection lost")
    await expect(item.get_by_role("button")).to_be_enabled()
    await expect(item.get_by_role("button")).to_have_text("Acknowledge again")
    assert await item.evaluate("(el) => getComputedStyle(el).animationName") == "flash-high"
    # back: the session delivers the ack, the node confirms, the alarm stops flashing
    p.paused = False
    await expect(item).to_have_attribute("data-ack", "delivered", timeout=10_000)
    await expect(item.locator(".ack-state")).to_have_text("✓ acknowledged by you — delivered to patient node")
    await expect(item).to_have_class("alarm alarm-high acked")
    assert await item.evaluate("(el) => getComputedStyle(el).animationName") == "none"

    def acks_51() -> int:
        return sum(
            1
            for m in p.received()
            if isinstance(a := codec.decode(m.data), codec.AlarmAck) and a.alarm_id == 51
        )

    assert acks_51() == 1


def patient_status(counter: int, ended: bool, label: str) -> bytes:
    """PATIENT_STATUS (CONTROL command 5), as p2pmed/node/patient.py sends it."""
    out = bytes([0x05, 0x01, 0x05]) + counter.to_bytes(4, "big") + bytes([1 if ended else 0])
    for text in (label, "Patient/123", "synthetic"):
        raw = text.encode()
        out += bytes([len(raw)]) + raw
    return out


async def test_patient_label_then_stream_ended(live: Live) -> None:
    page = live.page
    await expect(page.locator("#patient-label")).to_have_text("Unidentified patient")
    # (a low priority alarm is still unacknowledged: the title leads with it)
    await expect(page).to_have_title("low alarm — unidentified patient — p2pmed clinician")
    live.patient.send(MessageClass.HIGH, patient_status(1, False, "Bed 7 — Ana Lima"))
    await expect(page.locator("#patient-label")).to_have_text("Patient: Bed 7 — Ana Lima")
    await expect(page).to_have_title("low alarm — Bed 7 — Ana Lima — p2pmed clinician")
    assert await page.evaluate("window.p2pmed.metrics.codecRejected") == 0
    # the source ends: the link is up, but nothing more will come: not "live", not "lost"
    live.patient.send(MessageClass.HIGH, patient_status(2, True, "Bed 7 — Ana Lima"))
    conn = page.locator("#conn-state")
    await expect(conn).to_have_text(
        "Stream ended — the patient's source has no more data (connected via relay)"
    )
    await expect(page.locator("#ecg-status")).to_contain_text("FROZEN — stream ended")
    await expect(page.locator("#lost-banner")).to_be_hidden()
    await expect(page.locator('#alarm-list li[data-key="tech:all-paths-down"]')).to_have_count(0)


async def test_one_announcement_per_alarm_event(live: Live) -> None:
    page = live.page
    await page.evaluate(
        "() => { window.__said = []; const el = document.getElementById('sr-announce');"
        " new MutationObserver(() => { if (el.textContent) window.__said.push(el.textContent); })"
        ".observe(el, {childList: true, characterData: true, subtree: true}); }"
    )
    # the alarm list is not a live region of its own: the announcement region is the only one
    live_regions = await page.evaluate(
        "document.querySelectorAll('#alarm-list [role=alert], #alarm-list[aria-live],"
        " #alarm-list [aria-live]').length"
    )
    assert live_regions == 0

    def msg(state: codec.AlarmState, value: float) -> bytes:
        a = codec.Alarm(
            71,
            codec.Priority.MEDIUM,
            state,
            codec.AlarmCategory.PHYSIOLOGICAL,
            int(time.time() * 1e6),
            value,
            "rr-high",
            "pat-1",
        )
        return codec.encode(a)

    p = live.patient
    item = page.locator('#alarm-list li[data-alarm-id="71"]')
    p.send(MessageClass.CRITICAL, msg(codec.AlarmState.ACTIVE, 31.0))
    await expect(item).to_have_attribute("data-state", "active", timeout=5_000)
    p.send(MessageClass.CRITICAL, msg(codec.AlarmState.ACTIVE, 32.0))  # a repeat: nothing to say
    p.send(MessageClass.CRITICAL, msg(codec.AlarmState.ESCALATED, 33.0))
    await expect(item).to_have_attribute("data-state", "escalated", timeout=5_000)
    p.send(MessageClass.CRITICAL, msg(codec.AlarmState.CLEARED, 20.0))
    await expect(item).to_have_count(0, timeout=5_000)
    for _ in range(100):  # a hang guard, not a timing assert
        said = await page.evaluate("window.__said")
        if sum(s.count("rr-high") for s in said) >= 3:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # and nothing more comes
    said = await page.evaluate("window.__said")
    # texts announced in the same moment are read as one, separated by ". "
    about = [t for s in said for t in s.split(". ") if "rr-high" in t]
    assert about == [
        "Medium priority alarm: rr-high, value 31",
        "Medium priority alarm rr-high is now escalated",
        "Alarm cleared: rr-high",
    ], said


def _rgb(css: str) -> tuple[float, ...]:
    nums = css[css.index("(") + 1 : css.index(")")].split(",")
    return tuple(float(x) for x in nums[:3])


def _contrast(a: str, b: str) -> float:
    def lum(c: tuple[float, ...]) -> float:
        lin = [
            (v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4
            for v in c
        ]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    la, lb = sorted((lum(_rgb(a)), lum(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


PHASES = (
    "(el) => { const a = el.getAnimations()[0]; const d = a.effect.getTiming().duration;"
    " const out = []; for (const f of [0.25, 0.75]) { a.pause(); a.currentTime = d * f;"
    " const s = getComputedStyle(el); out.push([s.backgroundColor, s.color]); }"
    " a.play(); return {period: d, phases: out}; }"
)


async def test_visual_alarm_signals(live: Live) -> None:
    page = live.page
    p = live.patient
    for aid, prio, cond, value in (
        (81, codec.Priority.HIGH, "hr-low", 38.0),
        (82, codec.Priority.MEDIUM, "rr-high", 34.0),
    ):
        a = codec.Alarm(
            aid,
            prio,
            codec.AlarmState.ACTIVE,
            codec.AlarmCategory.PHYSIOLOGICAL,
            int(time.time() * 1e6),
            value,
            cond,
            "pat-1",
        )
        p.send(MessageClass.CRITICAL, codec.encode(a))
    high = page.locator('#alarm-list li[data-alarm-id="81"]')
    medium = page.locator('#alarm-list li[data-alarm-id="82"]')
    await expect(medium).to_have_count(1, timeout=5_000)
    # flashing on/off at the standard's rates, text readable in both phases
    for item, lo, hi in ((high, 1.4, 2.8), (medium, 0.4, 0.8)):
        got = await item.evaluate(PHASES)
        assert lo <= 1000 / got["period"] <= hi
        on, off = got["phases"]
        assert on[0] != off[0]  # really flashing
        for bg, fg in (on, off):
            assert _contrast(bg, fg) >= 4.5, (bg, fg)
    # low priority: cyan and steady
    low = page.locator('#alarm-list li[data-alarm-id="42"]')
    assert await low.evaluate("(el) => getComputedStyle(el).backgroundColor") == "rgb(0, 229, 255)"
    assert await low.evaluate("(el) => getComputedStyle(el).animationName") == "none"
    # the parameter's tile is highlighted, and the alarm shows the value now next to the alarm's
    await expect(page.locator("#tile-hr")).to_have_attribute("data-alarm", "high")
    await expect(page.locator("#tile-rr")).to_have_attribute("data-alarm", "medium")
    assert (
        await page.locator("#tile-hr").evaluate("(el) => getComputedStyle(el).animationName")
        == "flash-border-high"
    )
    await expect(high.locator(".text")).to_contain_text("hr-low (38, now ", timeout=5_000)
    # the focus ring stands out on the alarm's colours in both phases (3:1, two-tone ring)
    btn = high.get_by_role("button", name="Acknowledge high priority alarm hr-low")
    await btn.focus()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Tab")  # keyboard focus, so :focus-visible applies
    ring = await btn.evaluate(
        "(el) => { const s = getComputedStyle(el); return [s.outlineColor, s.boxShadow]; }"
    )
    assert ring[0] == "rgb(255, 255, 255)" and ring[1].startswith("rgb(0, 0, 0)")
    for item in (high, medium):
        for bg, _ in (await item.evaluate(PHASES))["phases"]:
            assert max(_contrast(bg, ring[0]), _contrast(bg, "rgb(0, 0, 0)")) >= 3.0
    await page.keyboard.press("Enter")
    await expect(high).to_have_attribute("data-ack", "delivered", timeout=5_000)
    tile = page.locator("#tile-hr")
    await expect(tile).to_have_attribute("data-alarm-acked", "")
    assert await tile.evaluate("(el) => getComputedStyle(el).animationName") == "none"


async def test_forged_hs_commit_does_not_reset_a_live_session(live: Live) -> None:
    page = live.page
    sas = await page.locator("#sas").text_content()
    forged = frame.encode(
        frame.Header(frame.FrameType.HS_COMMIT, frame.Flags(0), MessageClass.CRITICAL, 0, 0, 0, 0,
                     int(time.time() * 1e6), 32),
        bytes(range(32)),
    )  # fmt: skip
    # what a hostile server would relay in the patient's name
    await page.evaluate("(b) => window.p2pmed.app.feed(new Uint8Array(b), 'relay')", list(forged))
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live")
    assert await page.evaluate("window.p2pmed.metrics.rehandshakeIgnored") == 1
    assert await page.locator("#sas").text_content() == sas
    before = await page.evaluate("window.p2pmed.metrics.delivered[2].count")
    await asyncio.sleep(0.5)
    assert await page.evaluate("window.p2pmed.metrics.delivered[2].count") > before
