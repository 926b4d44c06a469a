"""A session the patient ends is shown as ended, never as live (#17.1): `p2pmed demo` is admitted,
then stopped with SIGTERM while the page keeps running with no server and no patient."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

import pytest
from playwright.async_api import Browser, expect

from signaling.testing import running_server
from tests.web.node_proc import REPO
from tests.web.relay_patient import RelayPatient

pytestmark = pytest.mark.asyncio(loop_scope="module")

# every text the header shows, with the time it appeared
WATCH_HEADER = (
    "() => { window.__headers = []; const el = document.getElementById('conn-state');"
    " const note = () => window.__headers.push([performance.now(), el.textContent]);"
    " const opts = {childList: true, characterData: true, subtree: true};"
    " new MutationObserver(note).observe(el, opts);"
    " note(); }"
)


async def test_demo_stopped_shows_session_ended_not_live(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-ended-") as d:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "p2pmed", "demo", "--json", "--media", "testpattern"),
            *("--data-dir", d),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
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
            # keep reading its --json events: a full stdout pipe must not be what stops it exiting
            drain = asyncio.create_task(proc.stdout.read())
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(url)
            await page.get_by_role("button", name="Admit patient").click(timeout=10_000)
            await expect(page.locator("#conn-state")).to_contain_text("Live via", timeout=15_000)
            video = page.locator("#remote-video")
            await expect(video).to_have_js_property("readyState", 4, timeout=10_000)
            await expect(page.locator("#video-status")).to_be_hidden()
            # numerics come at 1 Hz: the first must be here before they can go stale
            await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live")
            await page.evaluate(WATCH_HEADER)
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)

            conn = page.locator("#conn-state")
            await expect(conn).to_contain_text(
                "Session ended — closed by the patient", timeout=5_000
            )
            await expect(page.locator("#conn")).to_have_class("conn conn-ended")
            banner = page.locator("#ended-banner")
            await expect(banner).to_be_visible()
            await expect(banner).to_contain_text("closed by the patient")
            await expect(page.locator("#st-path")).to_have_text("none — session ended")
            await expect(page.locator("#st-grade")).to_have_text("—")
            await expect(page.locator("#lost-banner")).to_be_hidden()
            await expect(page.locator("#alarm-list li.alarm-technical")).to_have_count(0)
            # the last data stays, greyed and marked with its age
            await expect(page.locator("#ecg-status")).to_contain_text("FROZEN — session ended")
            await expect(page.locator("#ecg").locator("..")).to_have_class("wave frozen")
            await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "stale")
            await expect(page.locator("#mark-hr")).to_have_text("NOT LIVE")
            await expect(video).to_have_class("frozen", timeout=5_000)
            await expect(page.locator("#video-status")).to_contain_text("last frame")
            # still ended, and never live again, a while later
            await asyncio.sleep(4)
            await expect(conn).to_contain_text("Session ended — closed by the patient")
            await expect(page.locator("#ecg-status")).to_contain_text("last data")
            headers = await page.evaluate("window.__headers")
            texts = [text for _, text in headers]
            first_end = next(i for i, t in enumerate(texts) if t.startswith("Session ended"))
            assert all(t.startswith("Session ended") for t in texts[first_end:]), headers
            await ctx.close()
            await drain
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_patient_back_after_closing_opens_a_new_session(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-back-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-back", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            first = RelayPatient(srv.ws_url, srv.mint("s-back", "patient"), "pat-r")
            async with first:
                await page.get_by_role("button", name="Admit patient pat-r").click()
                await first.wait(lambda: first.established)
                assert first.session is not None
                first.session.close(time.time(), 0, "node stopped")
                await expect(page.locator("#conn-state")).to_have_text(
                    "Session ended — closed by the patient (node stopped)", timeout=5_000
                )
            # the same patient node (same endpoint, same key) starts again
            token = srv.mint("s-back", "patient")
            again = RelayPatient(srv.ws_url, token, "pat-r", identity=first.identity)
            async with again:
                await again.wait(lambda: again.established)
                assert again.session is not None
                await expect(page.locator("#sas")).to_have_text(again.session.sas, timeout=5_000)
                await expect(page.locator("#conn-state")).not_to_contain_text("Session ended")
                await expect(page.locator("#ended-banner")).to_be_hidden()
            await ctx.close()


async def test_patient_restarted_without_closing_gets_a_new_session(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-restart-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-restart", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            first = RelayPatient(srv.ws_url, srv.mint("s-restart", "patient"), "pat-k")
            async with first:
                await page.get_by_role("button", name="Admit patient pat-k").click()
                await first.wait(lambda: first.established)
            # gone without a CLOSE (killed); it starts again with the same key and endpoint
            token = srv.mint("s-restart", "patient")
            again = RelayPatient(srv.ws_url, token, "pat-k", identity=first.identity)
            async with again:
                await again.wait(lambda: again.established, timeout=15)
                assert again.session is not None
                await expect(page.locator("#sas")).to_have_text(again.session.sas, timeout=5_000)
            await ctx.close()


async def test_patient_that_left_can_be_admitted_again(browser: Browser) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-left-") as d:
        async with running_server(d) as srv:
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(srv.join_url(srv.mint("s-left", "clinician")))
            await expect(page.locator("#view-waiting")).to_be_visible(timeout=10_000)
            first = RelayPatient(srv.ws_url, srv.mint("s-left", "patient"), "pat-l")
            first.leave_on_exit = True
            async with first:
                await page.get_by_role("button", name="Admit patient pat-l").click()
                await first.wait(lambda: first.established)
            await expect(page.locator("#conn-state")).to_have_text(
                "Session ended — the patient left", timeout=5_000
            )
            await expect(page.locator("#lost-banner")).to_be_hidden()
            token = srv.mint("s-left", "patient")
            again = RelayPatient(srv.ws_url, token, "pat-l", identity=first.identity)
            async with again:
                await page.get_by_role("button", name="Admit patient pat-l").click(timeout=10_000)
                await again.wait(lambda: again.established)
                assert again.session is not None
                await expect(page.locator("#sas")).to_have_text(again.session.sas, timeout=5_000)
                await expect(page.locator("#ended-banner")).to_be_hidden()
            await ctx.close()
