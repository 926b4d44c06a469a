"""The central station page (web/js/station.js) in headless Chromium against a ward of real
patient node processes (stdin /dev/null) on a real signaling server: tiles live with numerics, a
late bed appears, a killed bed shows link-lost then live again, ward B unseen, alarms of two beds
in one list by priority, acknowledge reaches the right patient node, audio pause with its
countdown (checked on the page's log of scheduled WebAudio pulses), full view and back, axe."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from signaling.testing import RunningServer, running_server
from tests.node.conftest import NodeProc, start_proc
from tests.web.test_page_a11y import AXE, violations

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 60.0  # guards against a hang only


async def bed(srv: RunningServer, ward: str, name: str, tmp: Path, *args: str) -> NodeProc:
    url = srv.join_url(srv.mint(name, "patient", ward=ward))
    return await start_proc(url, name, "--data-dir", str(tmp / name), *args)


async def station(browser: Browser, srv: RunningServer, ward: str) -> tuple[Page, Any]:
    # the page's CSP allows only its own scripts; axe is injected by the test
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    token = srv.mint(f"ward.{ward}", "station", ward=ward)
    await page.goto(srv.join_url(token))
    await page.wait_for_function("!!window.p2pmedStation", timeout=10_000)
    return page, (ctx, errors)


async def until(page: Page, expr: str, arg: object = None) -> Any:
    """Waits until the JS expression (a function of `arg`) is truthy; returns its value."""
    try:
        h = await page.wait_for_function(expr, arg=arg, timeout=WAIT * 1000, polling=100)
    except Exception:
        print(expr, await page.evaluate(DUMP))
        raise
    return await h.json_value()


DUMP = """JSON.stringify([...window.p2pmedStation.beds.values()].map((b) =>
  [b.id, b.state, b.snap && b.snap.conn, b.snap && b.snap.alarms]))"""


HR_OF = "(b) => window.p2pmedStation.beds.get(b)?.snap?.numerics?.hr ?? null"
LIVE = (
    "(b) => { const x = window.p2pmedStation.beds.get(b);"
    " return x && x.state === 'live' && x.snap && x.snap.live && x.snap.numerics; }"
)

# [whether the bed's page runs its own animation loop, ECG samples drawn so far]
DRAWING = (
    "(b) => { const a = window.p2pmedStation.beds.get(b).frame.contentWindow.p2pmed.app;"
    " return [!!a.drawing, a.ecg.samplesDrawn]; }"
)
ALL_DRAWN = (
    "() => [...window.p2pmedStation.beds.values()].map((b) =>"
    " b.frame.contentWindow.p2pmed.app.ecg.samplesDrawn)"
)
RTT_SHOWN = "(b) => /ms$/.test(window.p2pmedStation.beds.get(b)?.snap?.rtt || '')"


async def test_station_tiles_late_bed_link_lost_and_ward_b_unseen(
    browser: Browser, tmp_path: Path
) -> None:
    assert AXE.exists(), "run `npm install` in tests/web/axe"
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-page-") as d:
        async with running_server(Path(d) / "srv") as srv:
            beds = [await bed(srv, "A", f"b{i}", tmp_path, "--scenario", "normal") for i in (1, 2)]
            other = await bed(srv, "B", "x1", tmp_path)  # ward B: never seen by A's station
            late = again = None
            page, (ctx, errors) = await station(browser, srv, "A")
            try:
                for b in ("b1", "b2"):
                    await until(page, LIVE, b)
                tile = page.locator('.bedtile[data-bed="b1"]')
                await expect(tile).to_have_attribute("data-state", "live")
                await expect(tile.locator(".bednums")).to_contain_text("HR ")
                hr = await page.evaluate(HR_OF, "b1")
                assert 30 < hr < 200
                # every bed is its own E2E session with the station's one endpoint id
                sid = await page.evaluate("window.p2pmedStation.eid")
                for p in beds:
                    assert (await p.w.wait_for("handshake", timeout=WAIT))["peer"] == sid
                # a bed that joins later appears and goes live
                late = await bed(srv, "A", "b3", tmp_path, "--scenario", "normal")
                await until(page, LIVE, "b3")
                assert await page.locator(".bedtile").count() == 3
                await expect(page.locator("#st-beds-title")).to_have_text("Beds (3)")
                assert await violations(page) == []
                # a bed killed: link lost, then live again with its vitals flowing
                n0 = await page.evaluate(
                    "() => window.p2pmedStation.beds.get('b2').frame.contentWindow"
                    ".p2pmed.metrics.delivered[2]?.count ?? 0"
                )
                beds[1].kill()
                await beds[1].stop()
                await expect(page.locator('.bedtile[data-bed="b2"]')).to_have_attribute(
                    "data-state", "link-lost", timeout=WAIT * 1000
                )
                await expect(page.locator('.bedtile[data-bed="b2"] .bedstate')).to_have_text(
                    "LINK LOST"
                )
                again = await bed(srv, "A", "b2", tmp_path, "--scenario", "normal")
                await expect(page.locator('.bedtile[data-bed="b2"]')).to_have_attribute(
                    "data-state", "live", timeout=WAIT * 1000
                )
                await until(
                    page,
                    "(n) => (window.p2pmedStation.beds.get('b2').frame.contentWindow"
                    ".p2pmed.metrics.delivered[2]?.count ?? 0) > n + 20",
                    n0,
                )
                await until(page, LIVE, "b2")
                # nothing lost: every class in sequence, no ECG sample gap, on the same session
                m = await page.evaluate(
                    "window.p2pmedStation.beds.get('b2').frame.contentWindow.p2pmed.metrics"
                )
                gaps = {c: d["gaps"] for c, d in m["delivered"].items()}
                assert len(gaps) >= 2 and not any(gaps.values()), m["delivered"]
                assert m["ecgSourceGaps"] == 0
                assert m["codecRejected"] == 0 and m["rejected"] == 0
                # nothing of ward B, and B's bed never saw the station
                names = await page.evaluate("[...window.p2pmedStation.beds.keys()].sort()")
                assert names == ["b1", "b2", "b3"]
                assert not other.w.of("handshake")
                # a small tile has no animation loop of its own: the station draws every
                # tile's sweeps in its one animation frame, and runs every tile's timers (the
                # RTT comes from the tile session's own pings)
                own, n1 = await page.evaluate(DRAWING, "b1")
                assert own is False
                await until(page, f"(n) => ({DRAWING})('b1')[1] > n + 200", n1)
                await until(page, RTT_SHOWN, "b1")
                # tiles out of sight are not drawn, their sessions still run: a viewport too
                # short to show any tile, then the whole page again
                await page.set_viewport_size({"width": 1400, "height": 60})
                await until(page, "() => window.p2pmedStation.inSight.size === 0")
                drawn0 = await page.evaluate(ALL_DRAWN)
                posts = await page.evaluate("window.p2pmedStation.metrics.posts")
                await until(page, "(n) => window.p2pmedStation.metrics.posts > n + 6", posts)
                assert await page.evaluate(ALL_DRAWN) == drawn0
                await page.set_viewport_size({"width": 1400, "height": 900})
                await until(page, f"(n) => ({DRAWING})('b1')[1] > n + 200", drawn0[0])
                # full view of a bed by keyboard, and back
                await page.locator('.bedtile[data-bed="b1"] .bedopen').focus()
                await page.keyboard.press("Enter")
                await expect(page.locator("#st-back")).to_be_focused()
                frame = page.frame_locator('.bedtile[data-bed="b1"] iframe')
                await expect(frame.locator("#sas")).to_be_visible()
                assert not await page.evaluate(
                    "window.p2pmedStation.beds.get('b1').frame.contentDocument"
                    ".documentElement.classList.contains('tile-mode')"
                )
                # full size: the bed's page draws at the screen's frame rate itself
                n2 = (await until(page, f"() => ({DRAWING})('b1')[0] && ({DRAWING})('b1')"))[1]
                hidden = await page.evaluate(DRAWING, "b2")
                await until(page, f"(n) => ({DRAWING})('b1')[1] > n + 200", n2)
                assert await page.evaluate(DRAWING, "b2") == hidden  # out of sight: not drawn
                assert await violations(page) == []
                await page.keyboard.press("Enter")
                await expect(page.locator('.bedtile[data-bed="b1"] .bedopen')).to_be_focused()
                await expect(frame.locator("#sas")).to_be_hidden()  # the frame is a tile again
                assert await page.evaluate(
                    "window.p2pmedStation.beds.get('b1').frame.contentDocument"
                    ".documentElement.classList.contains('tile-mode')"
                )
                n3 = (await until(page, f"() => !({DRAWING})('b1')[0] && ({DRAWING})('b1')"))[1]
                await until(page, f"(n) => ({DRAWING})('b1')[1] > n + 200", n3)
                assert not errors, errors
            finally:
                await ctx.close()
                for p in (*beds, other, late, again):
                    if p is not None:
                        await p.stop()


async def test_station_alarms_ack_and_audio_pause(browser: Browser, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-alarm-") as d:
        async with running_server(Path(d) / "srv") as srv:
            b1 = await bed(srv, "W", "b1", tmp_path, "--scenario", "alarm")
            b2 = await bed(srv, "W", "b2", tmp_path, "--scenario", "alarm")
            b3 = await bed(srv, "W", "b3", tmp_path, "--scenario", "normal")
            page, (ctx, errors) = await station(browser, srv, "W")
            try:
                # HIGH (hr-very-high) and MEDIUM (hr-high) alarms of b1 and b2 in the one list
                rows = "#st-alarm-list li"
                want = {(b, p) for b in ("b1", "b2") for p in ("high", "medium")}
                for _ in range(int(WAIT * 5)):
                    order = await page.eval_on_selector_all(
                        rows, "(ls) => ls.map((l) => [l.dataset.priority, l.dataset.bed])"
                    )
                    if want <= {(b, p) for p, b in order}:
                        break
                    await asyncio.sleep(0.2)
                order = await page.eval_on_selector_all(
                    rows, "(ls) => ls.map((l) => [l.dataset.priority, l.dataset.bed])"
                )
                rank = {"high": 0, "medium": 1, "low": 2}
                assert [rank[p] for p, _ in order] == sorted(rank[p] for p, _ in order), order
                assert {b for _, b in order} == {"b1", "b2"}
                tile = page.locator('.bedtile[data-bed="b1"]')
                await expect(tile).to_have_attribute("data-alarm", "high")
                assert (
                    await page.locator('.bedtile[data-bed="b3"]').get_attribute("data-alarm")
                    is None
                )
                # audio: the first key press turns sound on (no tile keeps the focus); HIGH
                # bursts are scheduled
                assert await page.evaluate("document.activeElement === document.body")
                await page.keyboard.press("Shift")
                await until(
                    page, "() => window.__p2pmedAudio.bursts.some((b) => b.priority === 'high')"
                )
                pulses = await page.evaluate(
                    "window.__p2pmedAudio.pulses.filter((p) => p.burst === 1).length"
                )
                assert pulses == 10  # IEC 60601-1-8 HIGH: a 10-pulse burst
                # audio pause: a visible countdown, nothing more scheduled, pending pulses cancelled
                await page.get_by_role("button", name="Pause alarm audio for 2 min").click()
                state = page.locator("#st-audio-state")
                await expect(state).to_contain_text("Alarm audio paused — 1:5")
                n = await page.evaluate("window.__p2pmedAudio.bursts.length")
                at = await page.evaluate("window.p2pmedStation.sound.ctx.currentTime")
                await asyncio.sleep(4)  # longer than the HIGH interburst interval (3 s + burst)
                assert await page.evaluate("window.__p2pmedAudio.bursts.length") == n
                late = await page.evaluate(
                    "(t) => window.__p2pmedAudio.pulses"
                    ".filter((p) => p.at > t && !p.cancelled).length",
                    at + 0.05,
                )
                assert late == 0
                await expect(state).to_contain_text("Alarm audio paused — 1:5")
                await page.get_by_role("button", name="Resume alarm audio").click()
                await until(page, "(n) => window.__p2pmedAudio.bursts.length > n", n)
                # acknowledge b1's HIGH alarm from the station: it reaches b1's node only
                li = page.locator('#st-alarm-list li[data-bed="b1"][data-priority="high"]')
                aid = await li.get_attribute("data-alarm-id")
                await li.get_by_role("button", name="Acknowledge high priority alarm").click()
                ack = await b1.w.wait_for("alarm-ack", timeout=WAIT)
                assert str(ack["alarm_id"]) == aid
                sid = await page.evaluate("window.p2pmedStation.eid")
                assert ack["by"] == sid
                await expect(li).to_have_attribute("data-ack", "delivered", timeout=WAIT * 1000)
                await expect(li.locator(".ack-state")).to_contain_text("acknowledged by you")
                assert not b2.w.of("alarm-ack") and not b3.w.of("alarm-ack")
                # b2's HIGH is still signalled: the tile of b1 shows its MEDIUM one flashing
                await expect(tile).to_have_attribute("data-alarm", "medium")
                assert await violations(page) == []
                assert not errors, errors
            finally:
                await ctx.close()
                for p in (b1, b2, b3):
                    await p.stop()


async def test_station_reload_resumes_every_bed(browser: Browser, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-station-reload-") as d:
        async with running_server(Path(d) / "srv") as srv:
            beds = [await bed(srv, "R", f"b{i}", tmp_path, "--scenario", "normal") for i in (1, 2)]
            page, (ctx, errors) = await station(browser, srv, "R")
            try:
                for b in ("b1", "b2"):
                    await until(page, LIVE, b)
                sid = await page.evaluate("window.p2pmedStation.eid")
                await page.reload()
                await page.wait_for_function("!!window.p2pmedStation", timeout=10_000)
                assert await page.evaluate("window.p2pmedStation.eid") == sid
                for b in ("b1", "b2"):
                    await until(page, LIVE, b)
                    m = await page.evaluate(
                        "(b) => { const w = window.p2pmedStation.beds.get(b).frame.contentWindow;"
                        " return { resumed: !!w.p2pmed.resumed, m: w.p2pmed.metrics }; }",
                        b,
                    )
                    assert m["resumed"], b  # the bed's running session continued
                    gaps = {c: x["gaps"] for c, x in m["m"]["delivered"].items()}
                    assert not any(gaps.values()), m["m"]["delivered"]
                for p in beds:  # one handshake each: no new session after the reload
                    assert len(p.w.of("handshake")) == 1
                assert not errors, errors
            finally:
                await ctx.close()
                for p in beds:
                    await p.stop()
