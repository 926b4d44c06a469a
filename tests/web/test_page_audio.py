"""IEC 60601-1-8 auditory alarm signals in the page (WebAudio), checked through the page's log of
scheduled pulses (window.__p2pmedAudio) against the standard's figures; audio pause with a
countdown; unlock on the first gesture; sticky alarm bar; alarm state in the tab title."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from p2pmed.core.frame import MessageClass
from p2pmed.vitals import codec
from signaling.testing import running_server
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")


def alarm(aid: int, prio: codec.Priority, state: codec.AlarmState, cond: str) -> bytes:
    a = codec.Alarm(
        aid,
        prio,
        state,
        codec.AlarmCategory.PHYSIOLOGICAL,
        int(time.time() * 1e6),
        None,
        cond,
        "pat-1",
    )
    return codec.encode(a)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(browser: Browser) -> AsyncIterator[tuple[Page, RelayPatient]]:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-audio-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context(viewport={"width": 1200, "height": 500})
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-audio", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            async with RelayPatient(srv.ws_url, srv.mint("s-audio", "patient")) as patient:
                # no gesture yet: the page cannot sound and offers to turn sound on
                assert await page.evaluate("window.p2pmed.app.sound.blocked") is True
                await page.get_by_role("button", name="Admit patient pat-sim").click()
                await patient.wait(lambda: patient.established)
                yield page, patient
            await ctx.close()


async def _bursts(page: Page, prio: str, n: int, timeout: float = 20.0) -> list[list[Any]]:
    """The first `n` complete (not cancelled) bursts of `prio` logged from now on."""
    start = await page.evaluate("window.__p2pmedAudio.bursts.length")
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        log = await page.evaluate("window.__p2pmedAudio")
        ids = [b["burst"] for b in log["bursts"][start:] if b["priority"] == prio]
        ctx_now = await page.evaluate("window.p2pmed.app.sound.ctx.currentTime")
        out = []
        for i in ids:
            ps = [p for p in log["pulses"] if p["burst"] == i]
            if all(not p["cancelled"] for p in ps) and ps[-1]["at"] + ps[-1]["td"] <= ctx_now:
                out.append(ps)
        if len(out) >= n:
            return out[:n]
        assert loop.time() < end, f"{len(out)} {prio} bursts in {timeout} s"
        await asyncio.sleep(0.2)


def _spacings(pulses: list[dict[str, Any]]) -> list[float]:
    """End of one pulse to start of the next (IEC 60601-1-8 pulse spacing ts)."""
    return [b["at"] - (a["at"] + a["td"]) for a, b in itertools.pairwise(pulses)]


async def test_first_gesture_unlocks_sound(live: tuple[Page, RelayPatient]) -> None:
    page, _ = live
    assert await page.evaluate("window.p2pmed.app.sound.ctx.state") == "running"
    await expect(page.locator("#btn-audio-unlock")).to_be_hidden()


async def test_high_priority_ten_pulse_burst_repeats(live: tuple[Page, RelayPatient]) -> None:
    page, p = live
    p.send(
        MessageClass.CRITICAL, alarm(61, codec.Priority.HIGH, codec.AlarmState.ACTIVE, "hr-high")
    )
    await expect(page).to_have_title(
        "‼ HIGH ALARM — unidentified patient — p2pmed clinician", timeout=5_000
    )
    await expect(page.locator("#audio-state")).to_have_text("Alarm sounding (high priority)")
    first, second = await _bursts(page, "high", 2)
    for burst in (first, second):
        assert len(burst) == 10
        for pulse in burst:
            assert 0.075 <= pulse["td"] <= 0.200  # effective pulse duration, high priority
            assert 150 <= pulse["f0"] <= 1000
        td = burst[0]["td"]
        ts = _spacings(burst)
        x = ts[0]
        assert 0.050 <= x <= 0.125
        for i in (1, 3, 5, 6, 8):  # x, within +-5 % of each other
            assert abs(ts[i] - x) <= 0.05 * x
        for i in (2, 7):  # 3rd->4th and 8th->9th: 2x + td
            assert abs(ts[i] - (2 * x + td)) <= 0.05 * x
        assert 0.35 <= ts[4] <= 1.30  # 5th->6th
    interburst = second[0]["at"] - (first[-1]["at"] + first[-1]["td"])
    assert 2.5 <= interburst <= 15.0


async def test_audio_pause_counts_down_and_silences(live: tuple[Page, RelayPatient]) -> None:
    page, _ = live
    # the alarm bar stays on screen when the page scrolls
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await expect(page.locator("#btn-audio-pause")).to_be_in_viewport()
    await page.get_by_role("button", name="Pause alarm audio for 2 min").click()
    state = page.locator("#audio-state")
    await expect(state).to_have_text("Alarm audio paused — 2:00 left")
    paused_at = await page.evaluate("window.p2pmed.app.sound.ctx.currentTime")
    await expect(state).to_have_text("Alarm audio paused — 1:57 left", timeout=6_000)
    log = await page.evaluate("window.__p2pmedAudio.pulses")
    assert not [x for x in log if x["at"] > paused_at and not x["cancelled"]]
    # the alarm itself is still shown and flashing
    item = page.locator('#alarm-list li[data-alarm-id="61"]')
    assert await item.evaluate("(el) => getComputedStyle(el).animationName") == "flash-high"
    await page.get_by_role("button", name="Resume alarm audio").click()
    await _bursts(page, "high", 1)


async def test_acknowledged_alarm_stops_sounding(live: tuple[Page, RelayPatient]) -> None:
    page, _ = live
    item = page.locator('#alarm-list li[data-alarm-id="61"]')
    await item.get_by_role("button", name="Acknowledge high priority alarm hr-high").click()
    await expect(item).to_have_attribute("data-ack", "delivered", timeout=5_000)
    await expect(page).to_have_title("unidentified patient — p2pmed clinician")
    acked_at = await page.evaluate("window.p2pmed.app.sound.ctx.currentTime")
    await asyncio.sleep(1.0)
    log = await page.evaluate("window.__p2pmedAudio.pulses")
    assert not [x for x in log if x["at"] > acked_at and not x["cancelled"]]
    await expect(page.locator("#audio-state")).to_have_text("")


async def test_medium_priority_three_pulse_burst_repeats(live: tuple[Page, RelayPatient]) -> None:
    page, p = live
    p.send(
        MessageClass.CRITICAL,
        alarm(62, codec.Priority.MEDIUM, codec.AlarmState.ACTIVE, "spo2-low"),
    )
    await expect(page).to_have_title(
        "! MEDIUM ALARM — unidentified patient — p2pmed clinician", timeout=5_000
    )
    first, second = await _bursts(page, "medium", 2)
    for burst in (first, second):
        assert len(burst) == 3
        for pulse in burst:
            assert 0.125 <= pulse["td"] <= 0.250
        ts = _spacings(burst)
        assert 0.125 <= ts[0] <= 0.250
        assert abs(ts[1] - ts[0]) <= 0.05 * ts[0]
    interburst = second[0]["at"] - (first[-1]["at"] + first[-1]["td"])
    assert 2.5 <= interburst <= 30.0
    p.send(
        MessageClass.CRITICAL,
        alarm(62, codec.Priority.MEDIUM, codec.AlarmState.CLEARED, "spo2-low"),
    )
    await expect(page).to_have_title("unidentified patient — p2pmed clinician", timeout=5_000)
