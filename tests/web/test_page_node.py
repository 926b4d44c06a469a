"""The page in a live session with a real patient node (`p2pmed node --json`) over WebRTC.

One signaling server, one patient node process and one page per module; tests run in order.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from signaling.testing import RunningServer, running_server
from tests.web.node_proc import REPO, NodeProc

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Live:
    server: RunningServer
    page: Page
    node: NodeProc


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(browser: Browser) -> AsyncIterator[Live]:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-node-") as d:
        async with running_server(Path(d) / "server") as srv:
            purl = srv.join_url(srv.mint("s-node", "patient"))
            args = ("--scenario", "alarm", "--media", "testpattern")
            async with NodeProc(purl, str(Path(d) / "patient"), *args, commands=True) as node:
                await node.wait_for(lambda e: e.get("event") == "joined")
                ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
                page = await ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(srv.join_url(srv.mint("s-node", "clinician")))
                admit = page.get_by_role("button", name="Admit patient")
                await admit.click(timeout=10_000)
                await node.wait_for(lambda e: e.get("event") == "handshake")
                yield Live(srv, page, node)
                await ctx.close()
                assert not errors, errors


async def test_secured_with_same_sas_as_the_node(live: Live) -> None:
    hs = live.node.of("handshake")[0]
    await expect(live.page.locator("#sas")).to_have_text(hs["sas"], timeout=5_000)
    assert hs["peer_fingerprint"] == await live.page.locator("#my-fp").text_content()
    joined = live.node.of("joined")[0]
    await expect(live.page.locator("#peer-fp")).to_have_text(joined["fingerprint"])


async def test_numbers_on_screen_match_the_node_json_events(live: Live) -> None:
    page = live.page
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=10_000)
    shown = await page.evaluate("window.p2pmed.metrics.lastNumerics")
    sent = [
        e
        for e in live.node.of("sent")
        if e.get("kind") == "numerics" and e["t_us"] == shown["timestamp_us"]
    ]
    assert len(sent) == 1
    values = sent[0]["values"]
    for key in ("hr", "spo2", "temp", "rr", "sys", "dia"):
        assert shown[key] == values[key], key
    text = {k: await page.locator(f"#val-{k}").text_content() for k in ("hr", "spo2", "rr")}
    # the text may already show a newer NUMERICS; it must be one the node sent
    sent_hr = {
        f"{e['values']['hr']:.0f}" for e in live.node.of("sent") if e.get("kind") == "numerics"
    }
    assert text["hr"] in sent_hr


async def test_ecg_drawn_and_moving(live: Live) -> None:
    page = live.page
    await expect(page.locator("#ecg-status")).to_contain_text("Hz", timeout=5_000)
    a = await page.locator("#ecg").screenshot()
    await asyncio.sleep(0.4)
    b = await page.locator("#ecg").screenshot()
    assert a != b
    assert await page.evaluate("window.p2pmed.metrics.ecgSourceGaps") == 0


async def test_remote_video_plays(live: Live) -> None:
    page = live.page
    video = page.locator("#remote-video")
    await expect(video).to_have_js_property("readyState", 4, timeout=10_000)
    w = await video.evaluate("(v) => v.videoWidth")
    t1 = await video.evaluate("(v) => v.currentTime")
    await asyncio.sleep(0.6)
    t2 = await video.evaluate("(v) => v.currentTime")
    assert w > 0
    assert t2 > t1


async def test_clinician_camera_and_mic_are_sent_to_the_patient(live: Live) -> None:
    page = live.page
    btn = page.get_by_role("button", name="Share my camera and microphone")
    await btn.click()
    await expect(
        page.get_by_role("button", name="Stop my camera and microphone")
    ).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#local-video")).to_be_visible()
    sent_js = (
        "async () => { const s = await window.p2pmed.app.pc.getStats(); const out = {};"
        " s.forEach((r) => { if (r.type === 'outbound-rtp') out[r.kind] = r.bytesSent; });"
        " return out; }"
    )
    first = await page.evaluate(sent_js)
    await asyncio.sleep(1.0)
    second = await page.evaluate(sent_js)
    assert second["video"] > first.get("video", 0)
    assert second["audio"] > first.get("audio", 0)


async def test_patient_alarm_acknowledged_from_the_page(live: Live) -> None:
    page = live.page
    alarm = await live.node.wait_for(
        lambda e: e.get("event") == "alarm" and e.get("state") == "ACTIVE"
    )
    aid = alarm["alarm_id"]
    item = page.locator(f'#alarm-list li[data-alarm-id="{aid}"]')
    prio = alarm["priority"].lower()
    await expect(item).to_have_attribute("data-priority", prio, timeout=5_000)
    await item.get_by_role("button", name=f"Acknowledge {prio} priority alarm").click()
    eid = await page.evaluate("sessionStorage.getItem('p2pmed-endpoint')")
    ack = await live.node.wait_for(
        lambda e: e.get("event") == "alarm-ack" and e.get("alarm_id") == aid
    )
    assert ack["by"] == eid
    await expect(item).to_have_attribute("data-ack-delivered", "true", timeout=5_000)


async def test_direct_cut_moves_to_relay_without_gap_then_returns(live: Live) -> None:
    page = live.page
    await expect(page.locator("#st-path")).to_have_text("direct", timeout=10_000)
    before = await page.evaluate("window.p2pmed.metrics.delivered[2].paths.relay || 0")
    live.node.command({"cmd": "cut-direct"})
    await live.node.wait_for(lambda e: e.get("event") == "direct-lost")
    await expect(page.locator("#st-path")).to_have_text("relay", timeout=5_000)
    await live.node.wait_for(lambda e: e.get("event") == "direct-open" and e["generation"] >= 2)
    await expect(page.locator("#st-path")).to_have_text("direct", timeout=10_000)
    m = await page.evaluate("window.p2pmed.metrics")
    assert m["delivered"]["2"]["paths"]["relay"] > before  # vitals really came over the relay
    assert m["delivered"]["2"]["gaps"] == 0  # frame seqs contiguous across both switches
    assert m["ecgSourceGaps"] == 0  # and so are the ECG samples
    assert m["rejected"] == 0


async def test_reload_resumes_the_session_without_loss(live: Live) -> None:
    page = live.page
    sas = await page.locator("#sas").text_content()
    acked = page.locator('#alarm-list li[data-ack-delivered="true"]')
    assert await acked.count() >= 1
    acked_id = await acked.first.get_attribute("data-alarm-id")
    # keep the state as it was at the moment the old page went away
    await page.evaluate(
        "window.addEventListener('pagehide', () => { for (const k of Object.keys(sessionStorage))"
        " if (k.startsWith('p2pmed-session:')) sessionStorage.setItem('test-last',"
        " sessionStorage.getItem(k)); })"
    )
    await page.reload()
    await expect(page.locator("#sas")).to_have_text(sas or "", timeout=10_000)
    assert await page.evaluate("window.p2pmed.resumed") is True
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=10_000)
    last = await page.evaluate("JSON.parse(sessionStorage.getItem('test-last'))")
    m = await page.evaluate("window.p2pmed.metrics")
    assert m["delivered"]["2"]["first"] == last["cumulative"][2]  # continues exactly where it was
    assert m["delivered"]["2"]["gaps"] == 0
    assert m["rejected"] == 0
    restored = page.locator(f'#alarm-list li[data-alarm-id="{acked_id}"]')
    await expect(restored).to_have_attribute("data-ack-delivered", "true")
    await expect(page.locator("#st-path")).to_have_text("direct", timeout=10_000)


async def test_page_joins_from_the_url_printed_by_demo(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-demo-") as d:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "p2pmed",
            "demo",
            "--json",
            "--media",
            "none",
            "--data-dir",
            d,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            url = ""
            while not url:
                line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
                assert line, "demo exited before printing the join URL"
                if "/join#token=" in line and not line.startswith("{"):
                    url = line
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(url)
            await page.get_by_role("button", name="Admit patient").click(timeout=10_000)
            await expect(page.locator("#ecg-status")).to_contain_text("Hz", timeout=10_000)
            await expect(page.locator("#conn-state")).to_contain_text("Live via", timeout=5_000)
            await ctx.close()
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
